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
class PaperRow:
    """One method's numbers in the paper (a row of its Table 4); None: not reported."""

    alpaca_eval_lc: float | None = field(default=None, metadata={"help": "AlpacaEval 2 length-controlled win rate, %."})
    alpaca_eval_wr: float | None = field(default=None, metadata={"help": "AlpacaEval 2 raw win rate, %."})
    arena_hard_wr: float | None = field(default=None, metadata={"help": "Arena-Hard v0.1 win rate, %."})
    mt_bench: dict[str, float] = field(default_factory=dict, metadata={
        "help": "MT-Bench score (1-10) by the judge that gave it, e.g. {gpt-4: 7.7, gpt-4-turbo: 6.0}."})

    def __post_init__(self) -> None:
        rates = [r for r in (self.alpaca_eval_lc, self.alpaca_eval_wr, self.arena_hard_wr) if r is not None]
        if not all(isinstance(r, (int, float)) and 0 <= r <= 100 for r in rates):
            raise ConfigError(f"win rates must be percentages in [0, 100], got {rates}")
        if not isinstance(self.mt_bench, dict) or not all(
                isinstance(s, (int, float)) and 0 <= s <= 10 for s in self.mt_bench.values()):
            raise ConfigError(f"mt_bench = {self.mt_bench!r} must map judges to scores in [0, 10]")


@dataclass
class PaperResults:
    """What the SimPO paper reports for this setting, one row per method, to set beside our evaluation."""

    source: str = field(metadata={"help": "Where the numbers come from."})
    methods: dict[str, PaperRow] = field(metadata={
        "help": "Rows by method: sft (the starting model) or a name of the recipe's `methods`."})


@dataclass
class Hardware:
    """What a full run of the recipe needs (README table)."""

    gpus: int = field(metadata={"help": "GPUs of the paper's run; any count works, the global batch is kept."})
    gpu_memory_gb: int = field(metadata={"help": "Memory per GPU the recipe is sized for."})
    note: str = field(default="", metadata={"help": "Run time, alternatives (LoRA, ZeRO-2, ...)."})

    def __post_init__(self) -> None:
        if self.gpus < 1 or self.gpu_memory_gb < 1:
            raise ConfigError(f"hardware: gpus and gpu_memory_gb must be ≥ 1, got {self.gpus}, {self.gpu_memory_gb}")


# The authors' order and the paper's grids (appendix; /work/shared/PAPER.md): learning rate first, then
# the margin as γ/β (the paper's γ grid {0.3, 0.5, 1.0, 1.2, 1.4, 1.6} at its β = 2), then β.
PAPER_GRID = {"learning_rate": [3e-7, 5e-7, 6e-7, 1e-6], "gamma_beta_ratio": [0.15, 0.25, 0.5, 0.6, 0.7, 0.8],
              "beta": [2.0, 2.5, 10.0]}


@dataclass
class Sweep:
    """A recipe's tuning grid for `make sweep` (default: PAPER_GRID in the authors' order)."""

    grid: dict[str, list] = field(default_factory=lambda: dict(PAPER_GRID), metadata={
        "help": "{config key: values}, in tuning order (sequential search tunes one key after another)."})
    search: str = field(default="sequential", metadata={
        "help": "sequential: each key in turn, the best value kept (the authors' way); grid: every combination."})
    metrics: list[str] = field(default_factory=lambda: ["eval_rewards/accuracies", "eval_loss"], metadata={
        "help": "Final logged values shown; the first chooses (higher is better, lower for names with 'loss'; "
                "NAME:min or NAME:max to say)."})

    def __post_init__(self) -> None:
        if self.search not in ("sequential", "grid"):
            raise ConfigError(f"sweep: search = {self.search!r}: choose sequential or grid")
        if not isinstance(self.grid, dict) or not self.grid:
            raise ConfigError("sweep: grid must be a mapping {config key: [values]}")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values or len(set(map(str, values))) != len(values):
                raise ConfigError(f"sweep: grid[{key!r}] = {values!r} must be a non-empty list of distinct values")
        if not self.metrics or not all(isinstance(m, str) and m for m in self.metrics):
            raise ConfigError(f"sweep: metrics = {self.metrics!r} must be a non-empty list of names")


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


NESTED = {"generation": Generation, "hardware": Hardware, "sweep": Sweep, "onpolicy": OnPolicyConfig}


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
    sweep: Sweep = field(default_factory=Sweep, metadata={"help": "What `make sweep` tunes (default: the paper's)."})
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
    if "paper_results" in raw:
        raw["paper_results"] = _paper_results(raw["paper_results"], raw["methods"], source)
    recipe = build(raw, (Recipe,), source)[0]
    if recipe.name != Path(path).stem:
        raise ConfigError(f"{source}: name {recipe.name!r} must match the file name {Path(path).stem!r}")
    # config paths are relative to the repository holding recipes/, whatever the working directory
    recipe.root = Path(path).resolve().parent.parent
    recipe.accelerate_config = str(recipe.root / recipe.accelerate_config)
    for stage in recipe.stages:
        stage.config = str(recipe.root / stage.config)
    return recipe


def _paper_results(raw, methods: dict, source: str) -> PaperResults:
    if not isinstance(raw, dict) or not isinstance(raw.get("methods"), dict):
        raise ConfigError(f"{source}: `paper_results` must be {{source, methods: {{method: numbers}}}}")
    rows = {}
    for name, numbers in raw["methods"].items():
        if name != "sft" and name not in methods:
            raise ConfigError(f"{source} paper_results.methods: {name!r} is neither sft nor one of the recipe's "
                              f"methods ({', '.join(methods)})")
        rows[name] = build(numbers or {}, (PaperRow,), f"{source} paper_results.methods.{name}")[0]
    return build({k: v for k, v in raw.items() if k != "methods"} | {"methods": rows}, (PaperResults,),
                 f"{source} paper_results")[0]


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
    return [(stage, [str(recipe.root / STAGE_SCRIPTS[stage.stage]), stage.config, *_as_args(settings)])
            for stage, settings, _ in _stage_settings(recipe, extra, from_sft, method)]


def override_origins(recipe: Recipe, extra: list[str] = (), from_sft: str | None = None,
                     method: str | None = None) -> list[dict[str, str]]:
    """For each stage of `stage_commands`, where each of its --key=value comes from, for error messages."""
    return [origins for _, _, origins in _stage_settings(recipe, extra, from_sft, method)]


def _stage_settings(recipe: Recipe, extra: list[str], from_sft: str | None,
                    method: str | None) -> list[tuple[Stage, dict, dict]]:
    """(stage, its overrides, where each override comes from) for each stage to run."""
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
    result = []
    for stage in stages:
        selected = {}
        if stage.stage == "preference" and method is not None:
            selected = method_settings | {"output_dir": method_output_dir(stage, method)}
        layers = [(f"{recipe.name} recipe, stage {stage.stage} overrides", stage.overrides),
                  ("--from_sft" if from_sft is not None and not result else "the previous stage's output_dir",
                   {"model_name_or_path": previous} if previous is not None else {}),
                  (f"{recipe.name} recipe, method {method}", selected),
                  ("command line --{key}", common),
                  (f"command line --{stage.stage}.{{key}}", specific[stage.stage])]
        settings = {k: v for _, layer in layers for k, v in layer.items()}
        origins = {k: label.format(key=k) for label, layer in layers for k in layer}
        result.append((stage, settings, origins))
        previous = settings.get("output_dir") or stage_output_dir(stage)
    return result


def method_output_dir(stage: Stage, method: str) -> str:
    """A method's folder: beside the preference stage's own output_dir, named after the method."""
    return str(Path(stage_output_dir(stage)).parent / method)


def stage_config_value(stage: Stage, key: str):
    """A key of a stage as it runs: from its overrides, else from its training config."""
    return stage.overrides.get(key) or read_yaml(stage.config).get(key)


def stage_output_dir(stage: Stage) -> str:
    """Where a stage writes its model: the output_dir of its overrides or of its config."""
    output_dir = stage_config_value(stage, "output_dir")
    if not output_dir:
        raise ConfigError(f"{stage.config}: output_dir is required (the next stage and evaluation start from it)")
    return output_dir
