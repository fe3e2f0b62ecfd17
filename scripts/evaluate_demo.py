#!/usr/bin/env python
"""Compare models on the demo's held-out prompts, judged by program:
`python scripts/evaluate_demo.py --models sft=outputs/tiny/sft simpo=outputs/tiny/simpo
 --heldout data/demo/heldout.jsonl --output_dir outputs/tiny/eval [--recipe recipes/tiny.yaml]`.
The first model is the baseline of the win rates; generations are cached per model. Decoding:
the flags given, else the recipe's `generation` section, else greedy with 32 new tokens. Every
other model is also compared with the first through alpaca_eval, judged by the same program served
as an OpenAI-compatible endpoint on 127.0.0.1."""
import argparse
from dataclasses import replace

from simpo_demo.evaluate import evaluate, markdown_table
from simpo_recipes.cli import run_cli
from simpo_recipes.evaluation.generation import GenerationSettings, from_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=PATH",
                        help="local model folders; the first is the baseline")
    parser.add_argument("--heldout", default="data/demo/heldout.jsonl")
    parser.add_argument("--output_dir", default="outputs/demo_eval")
    parser.add_argument("--recipe", default=None, help="recipes/<name>.yaml whose `generation` section to use")
    parser.add_argument("--max_new_tokens", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=None, help="0: greedy")
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    models = {}
    for item in args.models:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or name in models:
            parser.error(f"--models wants distinct NAME=PATH pairs, got {item!r}")
        models[name] = path
    settings = GenerationSettings()
    if args.recipe:
        from simpo_recipes.pipeline.recipes import load_recipe

        settings = from_recipe(load_recipe(args.recipe).generation)
    flags = ("max_new_tokens", "temperature", "top_p", "batch_size", "seed")
    settings = replace(settings, **{k: getattr(args, k) for k in flags if getattr(args, k) is not None})
    summary = evaluate(models, args.heldout, args.output_dir, settings)
    print(markdown_table(summary), end="")
    print(f"results: {args.output_dir}/results.md, results.json, results.png")


if __name__ == "__main__":
    run_cli(main, interrupted=lambda: "rerunning the same command reuses the answers generated so far")
