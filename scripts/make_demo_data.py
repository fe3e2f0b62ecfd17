#!/usr/bin/env python
"""Write the demo task's data: SFT set (UltraChat schema), preference set (UltraFeedback schema)
and held-out prompts, deterministically for a seed. `make demo-data` runs it."""
import argparse

from simpo_demo.task import write_demo_data
from simpo_recipes.cli import run_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", default="data/demo")
    parser.add_argument("--n_sft", type=int, default=4000)
    parser.add_argument("--n_prefs", type=int, default=4000)
    parser.add_argument("--n_heldout", type=int, default=200)
    parser.add_argument("--n_test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    paths = write_demo_data(args.output_dir, n_sft=args.n_sft, n_prefs=args.n_prefs, n_heldout=args.n_heldout,
                            n_test=args.n_test, seed=args.seed)
    for name, path in paths.items():
        print(f"{name:>12}: {path}")


if __name__ == "__main__":
    run_cli(main)
