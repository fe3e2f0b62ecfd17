"""Dataset loading (hub names or local folders) and the mixture of `dataset_mixer`."""
from __future__ import annotations

import math
import os
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict, concatenate_datasets

SFT_COLUMNS = ("messages",)
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
_FILE_TYPES = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


class DataError(ValueError):
    """The data cannot be used; the message names the source, split or rows and what to do."""


def _load_local(folder: Path, split: str) -> Dataset:
    if (folder / "dataset_dict.json").exists() or (folder / "dataset_info.json").exists():
        loaded = datasets.load_from_disk(str(folder))
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise DataError(f"{folder}: no split {split!r} (has {', '.join(loaded)})")
            return loaded[split]
        return loaded
    for suffix, builder in _FILE_TYPES.items():
        files = sorted(folder.glob(f"{split}{suffix}")) or sorted(folder.glob(f"{split}-*{suffix}"))
        if files:
            return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
    raise DataError(f"{folder}: no file for split {split!r} ({split}.jsonl, .json or .parquet); found {found}")


def load_split(source: str, split: str) -> Dataset:
    """One split of one source: a local folder (json/jsonl/parquet files or save_to_disk) or a hub name."""
    path = Path(source).expanduser()
    if path.is_dir():
        return _load_local(path, split)
    if path.exists():
        raise DataError(f"{source}: point dataset_mixer at a folder holding {split}.jsonl, not at a file")
    try:
        return datasets.load_dataset(source, split=split)
    except Exception as e:  # the hub raises many types; all mean "not available here"
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise DataError(
            f"dataset {source!r} (split {split!r}) is not a local folder and could not be loaded from the hub"
            + (" (HF_HUB_OFFLINE=1)" if offline else "") + f": {type(e).__name__}: {str(e)[:200]}. "
            "Download it first, or point dataset_mixer at a local folder."
        ) from None


def load_mixture(mixer: dict[str, float], splits: list[str], columns: tuple[str, ...], seed: int) -> DatasetDict:
    """{'train': ..., 'test': ...}: fractions apply to train splits; train rows are shuffled with `seed`."""
    mixed = {}
    for split in splits:
        kind = "train" if "train" in split else "test" if "test" in split else None
        if kind is None:
            raise DataError(f"dataset_splits: {split!r} must contain 'train' or 'test' to say what it is for")
        parts = []
        for source, fraction in mixer.items():
            part = load_split(source, split)
            missing = [c for c in columns if c not in part.column_names]
            if missing:
                raise DataError(
                    f"{source} [{split}]: missing column(s) {missing}; it has {part.column_names}. "
                    f"This stage needs {list(columns)}."
                )
            part = part.select_columns(list(columns))
            if kind == "train":
                part = part.select(range(math.ceil(fraction * len(part))))
            parts.append(part)
        combined = concatenate_datasets(parts)
        mixed[kind] = combined.shuffle(seed=seed) if kind == "train" else combined
    if "train" not in mixed:
        raise DataError(f"dataset_splits {splits} has no train split")
    return DatasetDict(mixed)
