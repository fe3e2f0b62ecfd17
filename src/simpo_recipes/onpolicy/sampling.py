"""N samples per prompt from the policy, one per seed, through the evaluation's generation path
(vLLM or batched transformers; one BOS; the recipe's stop tokens; appended after every batch)."""
from __future__ import annotations

from pathlib import Path

from simpo_recipes.evaluation.generation import GenerationSettings, generate
from simpo_recipes.onpolicy.config import OnPolicyConfig


def settings(config: OnPolicyConfig, stop: tuple[str, ...]) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                              top_p=config.top_p, stop=tuple(stop), batch_size=config.batch_size,
                              backend=config.backend)


def sample(path: str | Path, model: str, prompts: list[dict], config: OnPolicyConfig,
           stop: tuple[str, ...]) -> dict[str, list[dict]]:
    """{prompt_id: [{seed, output, n_tokens, truncated}, ...] in the order of config.seeds}.

    Each sample is the request (prompt_id, seed): its id in `path` is "<prompt_id>:<seed>", so a
    rerun generates only the missing ones and no sample is matched to a prompt by position."""
    requests = [{"id": f"{p['prompt_id']}:{seed}", "messages": [{"role": "user", "content": p["prompt"]}],
                 "seed": seed} for p in prompts for seed in config.seeds]
    rows = generate(path, model, requests, settings(config, stop), desc=f"sampling {Path(path).stem}")
    by_id = {row["id"]: row for row in rows}
    return {p["prompt_id"]: [{"seed": seed, **{k: by_id[f"{p['prompt_id']}:{seed}"][k]
                                               for k in ("output", "n_tokens", "truncated")}}
                             for seed in config.seeds] for p in prompts}
