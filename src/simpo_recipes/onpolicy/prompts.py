"""The prompts to answer: the sorted unique prompts of one split of a preference dataset."""
from __future__ import annotations

import hashlib

from simpo_recipes.data.loading import DataError, load_split


def prompt_id(prompt: str) -> str:
    """UltraFeedback's prompt_id: the SHA-256 of the prompt text."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def load_prompts(source: str, split: str, column: str = "prompt", max_prompts: int | None = None) -> list[dict]:
    """[{prompt_id, prompt}] of the sorted unique, non-empty `column` values of `source` [`split`]
    (the first `max_prompts` of them when given)."""
    ds = load_split(source, split, (column,))
    if column not in ds.column_names:
        raise DataError(f"{source} [{split}]: no column {column!r} (it has {ds.column_names}); set prompt_column")
    values = ds[column]
    bad = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
    if bad:
        print(f"{source} [{split}]: {len(bad)} empty or non-text prompt(s) left out, e.g. row {bad[0]}")
    prompts = sorted({v for v in values if isinstance(v, str) and v.strip()})[:max_prompts]
    if not prompts:
        raise DataError(f"{source} [{split}]: no prompt to answer")
    return [{"prompt_id": prompt_id(p), "prompt": p} for p in prompts]
