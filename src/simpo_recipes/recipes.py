"""Recipes: `recipes/<name>.yaml` names the ordered stages of a pipeline, each with its training
config, the accelerate config that launches them, and the decoding settings for evaluation."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from simpo_recipes.configs import ConfigError
from simpo_recipes.parsing import build, read_yaml

STAGE_SCRIPTS = {"sft": "scripts/run_sft.py", "simpo": "scripts/run_simpo.py"}


@dataclass
class Stage:
    stage: str = field(metadata={"help": "Which script runs it: sft or simpo."})
    config: str = field(metadata={"help": "Training config (training_configs/<model>-<stage>.yaml)."})
    overrides: dict = field(default_factory=dict, metadata={"help": "Extra --key=value for this stage."})

    def __post_init__(self) -> None:
        if self.stage not in STAGE_SCRIPTS:
            raise ConfigError(f"stage {self.stage!r}: choose one of {', '.join(STAGE_SCRIPTS)}")


@dataclass
class Generation:
    temperature: float = field(default=0.0, metadata={"help": "0 decodes greedily."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass when temperature > 0."})
    max_new_tokens: int = field(default=2048, metadata={"help": "Longest answer generated."})

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens <= 0:
            raise ConfigError(f"generation: invalid settings {self}")


@dataclass
class Recipe:
    name: str = field(metadata={"help": "Matches the file name: recipes/<name>.yaml."})
    accelerate_config: str = field(metadata={"help": "accelerate_configs/<topology>.yaml launching each stage."})
    stages: list[Stage] = field(metadata={"help": "Run in order; each starts from the previous one's output."})
    description: str = field(default="", metadata={"help": "One line for `make help` and the README table."})
    generation: Generation = field(default_factory=Generation, metadata={"help": "Evaluation decoding."})
    root: Path = field(init=False, default=Path("."), metadata={"help": "The repository holding recipes/."})

    def __post_init__(self) -> None:
        if not self.stages:
            raise ConfigError(f"recipe {self.name}: no stages")


def load_recipe(path: str | Path) -> Recipe:
    raw = read_yaml(path)
    source = str(path)
    stages = raw.pop("stages", None)
    if not isinstance(stages, list):
        raise ConfigError(f"{source}: `stages` must be a list of {{stage, config}} mappings")
    generation = raw.pop("generation", {}) or {}
    recipe = build(
        raw | {"stages": [build(s, (Stage,), f"{source} stages[{i}]")[0] for i, s in enumerate(stages)],
               "generation": build(generation, (Generation,), f"{source} generation")[0]},
        (Recipe,), source,
    )[0]
    if recipe.name != Path(path).stem:
        raise ConfigError(f"{source}: name {recipe.name!r} must match the file name {Path(path).stem!r}")
    # config paths are relative to the repository holding recipes/, whatever the working directory
    recipe.root = Path(path).resolve().parent.parent
    recipe.accelerate_config = str(recipe.root / recipe.accelerate_config)
    for stage in recipe.stages:
        stage.config = str(recipe.root / stage.config)
    return recipe


def stage_output_dir(stage: Stage) -> str:
    """Where a stage writes its model: the output_dir of its config (or of its overrides)."""
    output_dir = stage.overrides.get("output_dir") or read_yaml(stage.config).get("output_dir")
    if not output_dir:
        raise ConfigError(f"{stage.config}: output_dir is required (the next stage starts from it)")
    return output_dir


def stage_commands(recipe: Recipe, launcher: list[str], extra: list[str] = ()) -> list[list[str]]:
    """One command per stage; stage i > 0 starts from stage i−1's output_dir."""
    commands, previous = [], None
    for stage in recipe.stages:
        args = [str(recipe.root / STAGE_SCRIPTS[stage.stage]), stage.config]
        args += [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in stage.overrides.items()]
        if previous is not None:
            args.append(f"--model_name_or_path={previous}")
        commands.append(launcher + args + list(extra))
        previous = stage_output_dir(stage)
    return commands
