"""Recipes: `recipes/<name>.yaml` names the ordered stages of a pipeline, each with its training
config, the accelerate config that launches them, the preference methods it compares (objective +
hyperparameters, `make train OBJECTIVE=<method>`), the decoding settings for evaluation, and what
the paper reports for the setting."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simpo_recipes.config.arguments import ConfigError
from simpo_recipes.config.parsing import build, parse_overrides, read_yaml
from simpo_recipes.objectives import OBJECTIVES
from simpo_recipes.onpolicy.config import OnPolicyConfig

STAGE_SCRIPTS = {"sft": "scripts/run_sft.py", "preference": "scripts/run_preference.py"}


@dataclass
class Stage:
    stage: str = field(metadata={"help": "Which script runs it: sft or preference."})
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
    stop: list[str] = field(default_factory=list, metadata={
        "help": "Strings that end an answer (special tokens included); empty: the model's own end of turn."})
    reference_decoding: str = field(default="as_configured", metadata={
        "help": "How the paper's AlpacaEval numbers were decoded: as_configured (sampled as above) or beam_search "
                "(alpaca-eval 0.6.2 turned do_sample in a vLLM config into beam search of width 1)."})
    system_prompt: str | None = field(default=None, metadata={
        "help": "System turn of the AlpacaEval prompt (the reference Mistral-Base prompt has an empty one); null: none."})

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.max_new_tokens <= 0:
            raise ConfigError(f"generation: invalid settings {self}")
        if self.reference_decoding not in ("as_configured", "beam_search"):
            raise ConfigError(f"generation: reference_decoding = {self.reference_decoding!r}: "
                              "choose as_configured or beam_search")
        if not isinstance(self.stop, list) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"generation: stop = {self.stop!r} must be a list of non-empty strings")


@dataclass
class PaperResults:
    """What the SimPO paper reports for this setting, to set beside our own evaluation."""

    alpaca_eval_lc: float = field(metadata={"help": "AlpacaEval 2 length-controlled win rate, %."})
    alpaca_eval_wr: float = field(metadata={"help": "AlpacaEval 2 raw win rate, %."})
    arena_hard_wr: float = field(metadata={"help": "Arena-Hard v0.1 win rate, %."})
    mt_bench: float | None = field(default=None, metadata={"help": "MT-Bench score (1-10); None: not reported."})
    source: str = field(default="", metadata={"help": "Where the numbers come from."})

    def __post_init__(self) -> None:
        rates = (self.alpaca_eval_lc, self.alpaca_eval_wr, self.arena_hard_wr)
        if not all(isinstance(r, (int, float)) and 0 <= r <= 100 for r in rates):
            raise ConfigError(f"paper_results: win rates must be percentages in [0, 100], got {rates}")
        if self.mt_bench is not None and not 0 <= self.mt_bench <= 10:
            raise ConfigError(f"paper_results: mt_bench = {self.mt_bench} must be in [0, 10]")


@dataclass
class Hardware:
    """What a full run of the recipe needs (README table)."""

    gpus: int = field(metadata={"help": "GPUs of the paper's run; any count works, the global batch is kept."})
    gpu_memory_gb: int = field(metadata={"help": "Memory per GPU the recipe is sized for."})
    note: str = field(default="", metadata={"help": "Run time, alternatives (LoRA, ZeRO-2, ...)."})

    def __post_init__(self) -> None:
        if self.gpus < 1 or self.gpu_memory_gb < 1:
            raise ConfigError(f"hardware: gpus and gpu_memory_gb must be ≥ 1, got {self.gpus}, {self.gpu_memory_gb}")


@dataclass
class Method:
    """One preference method of the setting: the preference stage run with this objective and these
    settings, into a folder of its own (`make train MODEL=<recipe> OBJECTIVE=<method>`)."""

    objective: str = field(metadata={"help": "The objective (simpo_recipes.objectives); the method name if omitted."})
    source: str = field(metadata={
        "help": "Where the values come from: the paper's published ones, or its grid (\"not the paper's tuned value\")."})
    label: str = field(default="", metadata={"help": "Row name in tables (the paper's, e.g. R-DPO); default: the objective's."})
    settings: dict = field(default_factory=dict, metadata={
        "help": "--key=value for the preference stage: the objective's hyperparameters, learning_rate, ..."})

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if not isinstance(self.settings, dict):
            raise ConfigError(f"settings of {self.objective}: must be a mapping of keys to values")
        self.label = self.label or OBJECTIVES[self.objective].label


NESTED = {"generation": Generation, "paper_results": PaperResults, "hardware": Hardware, "onpolicy": OnPolicyConfig}


@dataclass
class Recipe:
    name: str = field(metadata={"help": "Matches the file name: recipes/<name>.yaml."})
    accelerate_config: str = field(metadata={"help": "accelerate_configs/<topology>.yaml launching each stage."})
    stages: list[Stage] = field(metadata={"help": "Run in order; each starts from the previous one's output."})
    description: str = field(default="", metadata={"help": "One line for `make help` and the README table."})
    generation: Generation = field(default_factory=Generation, metadata={"help": "Evaluation decoding."})
    published_sft: str | None = field(default=None, metadata={
        "help": "The paper's SFT checkpoint: `--from_sft published` starts SimPO from it, skipping SFT."})
    paper_results: PaperResults | None = field(default=None, metadata={"help": "The paper's numbers."})
    hardware: Hardware | None = field(default=None, metadata={"help": "GPUs and memory of a full run."})
    methods: dict[str, Method] = field(default_factory=dict, metadata={
        "help": "Preference methods compared in this setting, by name: OBJECTIVE=<name> selects one."})
    onpolicy: OnPolicyConfig | None = field(default=None, metadata={
        "help": "How `make onpolicy` builds this recipe's on-policy preference data."})
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
    raw["stages"] = [build(s, (Stage,), f"{source} stages[{i}]")[0] for i, s in enumerate(stages)]
    methods = raw.pop("methods", {})
    if not isinstance(methods, dict) or not all(isinstance(m, dict) for m in methods.values()):
        raise ConfigError(f"{source}: `methods` must map method names to {{objective, source, settings}}")
    raw["methods"] = {name: build({"objective": name} | m, (Method,), f"{source} methods.{name}")[0]
                      for name, m in methods.items()}
    for key, cls in NESTED.items():
        if key in raw:
            if not isinstance(raw[key], dict):
                raise ConfigError(f"{source}: `{key}` must be a mapping")
            raw[key] = build(raw[key], (cls,), f"{source} {key}")[0]
    recipe = build(raw, (Recipe,), source)[0]
    if recipe.name != Path(path).stem:
        raise ConfigError(f"{source}: name {recipe.name!r} must match the file name {Path(path).stem!r}")
    # config paths are relative to the repository holding recipes/, whatever the working directory
    recipe.root = Path(path).resolve().parent.parent
    recipe.accelerate_config = str(recipe.root / recipe.accelerate_config)
    for stage in recipe.stages:
        stage.config = str(recipe.root / stage.config)
    return recipe


def _as_args(settings: dict[str, Any]) -> list[str]:
    return [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in settings.items()]


def stage_commands(recipe: Recipe, extra: list[str] = (), from_sft: str | None = None,
                   method: str | None = None) -> list[tuple[Stage, list[str]]]:
    """(stage, [script, config, --key=value ...]) for each stage to run, in order.

    Stage i > 0 starts from stage i−1's output_dir. `method` runs the preference stage with one of
    the recipe's methods (its objective and settings) into `<stage output_dir>/../<method>`. `extra`
    holds --key=value for every stage and --<stage>.key=value for one kind of stage (e.g.
    --sft.model_name_or_path); both win over the chaining and the method. `from_sft` skips the stages
    before the preference stage and starts it from that model instead ('published': the recipe's
    published_sft)."""
    common, specific = {}, {name: {} for name in STAGE_SCRIPTS}
    for key, value in parse_overrides(list(extra)).items():
        stage_name, dot, stage_key = key.partition(".")
        if not dot:
            common[key] = value
        elif stage_name in {s.stage for s in recipe.stages}:
            specific[stage_name][stage_key] = value
        else:
            raise ConfigError(f"--{key}: recipe {recipe.name} has no {stage_name!r} stage "
                              f"(stages: {', '.join(s.stage for s in recipe.stages)})")
    method_settings = {}
    if method is not None:
        if method not in recipe.methods:
            raise ConfigError(f"recipe {recipe.name} has no method {method!r}; its methods: "
                              f"{', '.join(recipe.methods) or 'none'} (add one under `methods:`)")
        chosen = recipe.methods[method]
        method_settings = {"objective": chosen.objective} | chosen.settings
    stages, previous = recipe.stages, None
    if from_sft is not None:
        first = next((i for i, s in enumerate(stages) if s.stage == "preference"), None)
        previous = recipe.published_sft if from_sft == "published" else from_sft
        if first is None or previous is None:
            raise ConfigError(f"recipe {recipe.name}: cannot start from {from_sft!r} SFT: "
                              + ("it has no preference stage" if first is None else "it names no published_sft; "
                                 "give a model folder or hub name instead"))
        stages = stages[first:]
    commands = []
    for stage in stages:
        chained = {"model_name_or_path": previous} if previous is not None else {}
        selected = {}
        if stage.stage == "preference" and method is not None:
            selected = method_settings | {"output_dir": method_output_dir(stage, method)}
        settings = stage.overrides | chained | selected | common | specific[stage.stage]
        commands.append((stage, [str(recipe.root / STAGE_SCRIPTS[stage.stage]), stage.config, *_as_args(settings)]))
        previous = settings.get("output_dir") or stage_output_dir(stage)
    return commands


def method_output_dir(stage: Stage, method: str) -> str:
    """A method's folder: beside the preference stage's own output_dir, named after the method."""
    return str(Path(stage_output_dir(stage)).parent / method)


def stage_output_dir(stage: Stage) -> str:
    """Where a stage writes its model: the output_dir of its overrides or of its config."""
    output_dir = stage.overrides.get("output_dir") or read_yaml(stage.config).get("output_dir")
    if not output_dir:
        raise ConfigError(f"{stage.config}: output_dir is required (the next stage and evaluation start from it)")
    return output_dir
