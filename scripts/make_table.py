#!/usr/bin/env python
"""`make table`: every evaluated model (outputs/eval/<name>/results.json, written by
scripts/evaluate.py) beside the paper's numbers from its recipe: AlpacaEval 2 LC and WR, Arena-Hard
WR, MT-Bench, as outputs/eval/table.md and table.png; missing cells are marked."""
import argparse
import sys

from simpo_recipes.cli import run_cli
from simpo_recipes.evaluation.results import write_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval_dir", default="outputs/eval", help="Folder of <name>/results.json files.")
    parser.add_argument("--recipes_dir", default="recipes", help="Where each result's recipe (and paper numbers) is.")
    args = parser.parse_args()
    try:
        path, text = write_table(args.eval_dir, args.recipes_dir)
    except FileNotFoundError as e:
        sys.exit(f"error: {e}")
    print(text, end="")
    print(f"table: {path} and {path.with_suffix('.png')}")


if __name__ == "__main__":
    run_cli(main)
