#!/usr/bin/env python
"""`make paper`: every Table 4 method, SimPO's ablations and a γ sweep trained from the demo's SFT model,
each tuned by one rule, evaluated on held-out prompts, then docs/paper_reproduction.md and its figures.

    python scripts/run_paper.py [--methods simpo dpo ...] [--learning_rates 5e-5 2e-4] [--gamma_beta_ratios 0 0.5]
        [--n_prefs N] [--output_dir outputs/paper] [--docs_dir docs]

A rerun skips every finished run and evaluation (their results are files under output_dir)."""
import argparse
import dataclasses

from simpo_paper.config import PaperConfig
from simpo_paper.pipeline import run_paper
from simpo_recipes.cli import run_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = PaperConfig()
    for f in dataclasses.fields(PaperConfig):
        default = getattr(defaults, f.name)
        kind = type(default[0]) if isinstance(default, list) else type(default)
        parser.add_argument(f"--{f.name}", type=kind, nargs="+" if isinstance(default, list) else None,
                            default=default, help=f.metadata.get("help", "") + f" (default: {default})")
    args = parser.parse_args()
    run_paper(PaperConfig(**vars(args)))


if __name__ == "__main__":
    run_cli(main, interrupted=lambda: "rerunning make paper continues from the runs finished so far")
