"""One training run of `make paper`: a recipe method at one learning rate (and, for SimPO's γ sweep, one
γ/β), trained in this process through the preference stage (`make train OBJECTIVE=<method>`'s config
path), then scored on the validation prompts. Its record, `paper_run.json` in its folder, is written
last and atomically: a rerun skips a run that has one, and a run killed before it trains again."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from simpo_demo.evaluate import cached_generations
from simpo_demo.task import judge
from simpo_recipes.evaluation.generation import GenerationSettings
from simpo_recipes.files import write_json
from simpo_recipes.pipeline.launch import prepare_stage
from simpo_recipes.pipeline.recipes import Recipe, stage_commands
from simpo_recipes.pipeline.sweep import final_values, shown
from simpo_recipes.training.preference_stage import run_preference_stage

RECORD = "paper_run.json"
# logged by the preference stage (metrics.jsonl): held-out reward accuracy and margin, and the step count/time
LOGGED = ("eval_rewards/accuracies", "eval_rewards/margins", "eval_loss", "train_runtime", "train_steps_per_second")


@dataclass(frozen=True)
class Run:
    method: str
    learning_rate: float
    gamma_beta_ratio: float | None = None  # None: the method's own (the recipe's)

    @property
    def name(self) -> str:
        gamma = "" if self.gamma_beta_ratio is None else f"_gbr{shown(self.gamma_beta_ratio)}"
        return f"{self.method}_lr{shown(self.learning_rate)}{gamma}"

    def overrides(self) -> list[str]:
        gamma = [] if self.gamma_beta_ratio is None else [f"--gamma_beta_ratio={shown(self.gamma_beta_ratio)}"]
        return [f"--learning_rate={shown(self.learning_rate)}", *gamma]


def stage_arguments(recipe: Recipe, run: Run, sft: str, prefs: Path, output_dir: Path, topology) -> list[str]:
    """The preference stage's [config, --key=value ...] for `run`, as `make train OBJECTIVE=` builds them, plus
    what a short run in one process needs: no checkpoints (a killed run trains again from the start, in
    seconds), one evaluation at the end, no progress bars."""
    extra = [*run.overrides(), f"--dataset_mixer={json.dumps({str(prefs): 1.0})}", f"--output_dir={output_dir}",
             "--save_strategy=no", "--eval_strategy=epoch", "--disable_tqdm=true", "--logging_steps=1000"]
    (stage, (script, *args)), = stage_commands(recipe, extra, from_sft=sft, method=run.method)
    _, command = prepare_stage(stage, script, args, topology)
    return command[command.index(script) + 1:]


def validation_accuracy(name: str, model_path: Path, records: list[dict], settings: GenerationSettings,
                        output_dir: Path) -> dict:
    """Program-judge accuracy and mean length (tokens) of a model's greedy answers to the validation prompts."""
    rows = cached_generations(name, model_path, records, settings, output_dir)
    by_id = {r["prompt_id"]: r for r in records}
    right = [judge(by_id[g["prompt_id"]], g["output"]) for g in rows]
    return {"accuracy": sum(right) / len(right), "mean_length": sum(g["n_tokens"] for g in rows) / len(rows)}


def train_and_validate(recipe: Recipe, run: Run, sft: str, prefs: Path, runs_dir: Path, validation: list[dict],
                       settings: GenerationSettings, topology) -> dict:
    """`run`'s record: trained (or found finished), scored on the validation prompts, written last."""
    folder = runs_dir / run.name
    if (folder / RECORD).exists():
        return json.loads((folder / RECORD).read_text())
    start = time.monotonic()
    try:
        run_preference_stage(stage_arguments(recipe, run, sft, prefs, folder, topology))
    except SystemExit as e:  # the stage had finished before a kill came between it and this record
        if e.code not in (0, None):
            raise
    trained = time.monotonic() - start
    logged = final_values(folder, list(LOGGED))
    record = {"run": run.name, "method": run.method, "learning_rate": run.learning_rate,
              "gamma_beta_ratio": run.gamma_beta_ratio, "output_dir": str(folder),
              "validation": validation_accuracy(run.name, folder, validation, settings, folder / "validation"),
              "heldout_reward_accuracy": logged["eval_rewards/accuracies"],
              "heldout_reward_margin": logged["eval_rewards/margins"], "train_runtime_s": logged["train_runtime"],
              "train_seconds": round(trained, 1), "seconds": round(time.monotonic() - start, 1)}
    write_json(folder / RECORD, record)
    return record
