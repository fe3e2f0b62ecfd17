#!/usr/bin/env python
"""`make onpolicy MODEL=<name>`: on-policy preference data for a recipe, as its `onpolicy:` block
says: N samples per prompt from the policy (one per seed), scored by the reward model, binarised
(chosen = best, rejected = worst; identical, tied and truncated pairs dropped and counted).

    python scripts/make_onpolicy.py recipes/<name>.yaml [--step=all|sample|score|binarise] [--key=value ...]

--key=value overrides the block (--seeds=[1,2] --max_prompts=100 --reward_model.batch_size=4).
--step=all (default) runs each step in its own process, so the policy's GPU memory is free before
the reward model loads. Every step resumes: rerun the same command after a crash. Output:
<output_dir>/{train,test}.jsonl (point a recipe's dataset_mixer at <output_dir>), report.md,
report.json, margins.png."""
import dataclasses
import subprocess
import sys

from simpo_recipes.cli import run_cli
from simpo_recipes.config.parsing import build, parse_overrides
from simpo_recipes.errors import ConfigError
from simpo_recipes.onpolicy.binarise import report_markdown
from simpo_recipes.onpolicy.config import OnPolicyConfig
from simpo_recipes.onpolicy.pipeline import STEPS, policy_model, run
from simpo_recipes.pipeline.recipes import load_recipe


def resolve(argv: list[str]) -> tuple:
    """(recipe, on-policy config with the overrides, step)."""
    if not argv or argv[0].startswith("--"):
        raise ConfigError("usage: make_onpolicy.py recipes/<name>.yaml [--step=...] [--key=value ...]")
    recipe, overrides = load_recipe(argv[0]), parse_overrides(argv[1:])
    step = overrides.pop("step", "all")
    if recipe.onpolicy is None:
        raise ConfigError(f"{argv[0]}: no `onpolicy:` block; add one (see recipes/llama3-instruct-v0.2.yaml)")
    block = dataclasses.asdict(recipe.onpolicy)
    for key, value in overrides.items():
        group, dot, sub = key.partition(".")
        if dot and group == "reward_model":
            block["reward_model"][sub] = value
        elif dot:
            raise ConfigError(f"--{key}: only reward_model.<key> has sub-keys")
        else:
            block[key] = value
    return recipe, build(block, (OnPolicyConfig,), f"{argv[0]} onpolicy")[0], step


def main() -> None:
    recipe, config, step = resolve(sys.argv[1:])
    model = policy_model(recipe, config)
    if step == "all":
        for name in STEPS:
            print(f"[{recipe.name}] on-policy data, step {name}", flush=True)
            if subprocess.run([sys.executable, __file__, *sys.argv[1:], f"--step={name}"]).returncode != 0:
                sys.exit(f"[{recipe.name}] step {name} failed; rerun the same command to resume")
        return
    report = run(config, model, tuple(recipe.generation.stop), until=step)
    if report is not None:
        print(report_markdown(report), end="")
        print(f"dataset: {config.output_dir}/{{{','.join(config.splits)}}}.jsonl; report.md, report.json, margins.png")


if __name__ == "__main__":
    run_cli(main)
