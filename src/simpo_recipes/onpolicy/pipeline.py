"""The on-policy data steps in order: prompts, sample, score, binarise. Each step reuses what the
steps before it saved, so `run(..., until=step)` can be called once per step (a fresh process
each: the policy's GPU memory is free before the reward model loads) or once for all."""
from __future__ import annotations

from pathlib import Path

from simpo_recipes.config.parsing import read_yaml
from simpo_recipes.errors import ConfigError
from simpo_recipes.files import write_jsonl
from simpo_recipes.onpolicy.binarise import binarise, write_dataset
from simpo_recipes.onpolicy.config import OnPolicyConfig
from simpo_recipes.onpolicy.prompts import load_prompts
from simpo_recipes.onpolicy.reward_models import score_samples
from simpo_recipes.onpolicy.sampling import sample

STEPS = ("sample", "score", "binarise")


def policy_model(recipe, config: OnPolicyConfig) -> str:
    """The policy that samples: the block's `model`, else the model the recipe's preference
    stage (its first stage after SFT) starts from."""
    if config.model:
        return config.model
    stage = next((s for s in recipe.stages if s.stage != "sft"), None)
    model = None if stage is None else (read_yaml(stage.config) | stage.overrides).get("model_name_or_path")
    if not model:
        raise ConfigError(f"recipe {recipe.name}: onpolicy.model is not set and no preference stage names its model")
    return model


def run(config: OnPolicyConfig, model: str, stop: tuple[str, ...], until: str = "binarise") -> dict | None:
    """Steps up to `until` for every split; the report (binarise) or None."""
    if until not in STEPS:
        raise ConfigError(f"step {until!r}: choose one of all, {', '.join(STEPS)}")
    out = Path(config.output_dir)
    prompts = {split: load_prompts(config.prompts, source, config.prompt_column, config.max_prompts)
               for split, source in config.splits.items()}
    for split, rows in prompts.items():
        write_jsonl(out / "prompts" / f"{split}.jsonl", rows)
        print(f"{split}: {len(rows)} prompts from {config.prompts} [{config.splits[split]}], "
              f"{len(config.seeds)} samples each")
    samples = {split: sample(out / "samples" / f"{split}.jsonl", model, rows, config, stop)
               for split, rows in prompts.items()}
    if until == "sample":
        return None
    scores = {split: score_samples(out / "scores" / f"{split}.jsonl", config.reward_model, rows, samples[split])
              for split, rows in prompts.items()}
    if until == "score":
        return None
    results = {split: binarise(rows, samples[split], scores[split]) for split, rows in prompts.items()}
    meta = {"output_dir": str(out), "model": model, "reward_model": config.reward_model.name,
            "reward_type": config.reward_model.type, "prompts": config.prompts, "source_splits": config.splits,
            "seeds": config.seeds, "temperature": config.temperature, "top_p": config.top_p,
            "max_new_tokens": config.max_new_tokens}
    return write_dataset(out, results, meta)
