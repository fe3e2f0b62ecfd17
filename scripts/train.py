#!/usr/bin/env python
"""`make train MODEL=<name>`: run every stage of recipes/<name>.yaml in order, each launched with
the recipe's accelerate config and starting from the previous stage's output.

    python scripts/train.py recipes/tiny.yaml [--num_processes N] [--key=value ...]

Extra --key=value pairs override every stage's training config."""
import argparse
import subprocess
import sys

import yaml

from simpo_recipes.recipes import load_recipe, stage_commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("recipe", help="recipes/<name>.yaml")
    parser.add_argument("--accelerate_config", default=None, help="Overrides the recipe's accelerate config.")
    parser.add_argument("--num_processes", type=int, default=None, help="Default: the accelerate config's.")
    args, overrides = parser.parse_known_args()  # the rest: --key=value applied to every stage

    recipe = load_recipe(args.recipe)
    accelerate_config = args.accelerate_config or recipe.accelerate_config
    with open(accelerate_config) as f:
        num_processes = args.num_processes or yaml.safe_load(f).get("num_processes", 1)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config,
                "--num_processes", str(num_processes)]
    for i, command in enumerate(stage_commands(recipe, launcher, overrides), start=1):
        print(f"[{recipe.name}] stage {i}/{len(recipe.stages)}: {' '.join(command[len(launcher):])}", flush=True)
        if subprocess.run(command).returncode != 0:
            sys.exit(f"[{recipe.name}] stage {i} failed; rerun the same command to resume from its last checkpoint")


if __name__ == "__main__":
    main()
