"""Dataset loading (hub names or local folders) and the mixture of `dataset_mixer`.

Every row carries `origin`, where it comes from (a JSON file's own line number, or a split's row
index before mixing and shuffling), so that the drop report's examples can be found in the data.
JSON and JSON Lines files are read here rather than by `datasets`' json builder, whose type
inference turns digit-only answers into integers as soon as one row's content is not a string."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from datasets import Dataset, DatasetDict, concatenate_datasets
from datasets.table import InMemoryTable

from simpo_recipes.errors import UserError

SFT_COLUMNS = ("messages",)
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")
ORIGIN = "origin"
_FILE_TYPES = (".jsonl", ".json", ".parquet")
_BATCH = 10_000  # JSON rows converted to Arrow at a time


class DataError(UserError, ValueError):
    """The data cannot be used; the message names the source, split or rows and what to do."""


def _as_text(value: Any, where: str) -> str | None:
    """A content field as text: strings as they are, JSON numbers as written, OpenAI-style lists of
    parts as their text parts joined; anything else (an image part, a mapping) is an error by name."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, list) and all(isinstance(part, dict) for part in value):
        kinds = {part.get("type") for part in value}
        if kinds <= {"text"} and all(isinstance(part.get("text"), str) for part in value):
            return "".join(part["text"] for part in value)
        raise DataError(f"{where}: content has parts of type {sorted(map(str, kinds - {'text'}))}; only text is "
                        "supported: remove the row or those parts")
    raise DataError(f"{where}: content must be text, got {type(value).__name__} {json.dumps(value)[:80]}")


def _as_column(value: Any, where: str) -> Any:
    """A stage column (messages, prompt, chosen, rejected): a list of {role, content} turns, or text."""
    if isinstance(value, list):
        return [{"role": m.get("role"), "content": _as_text(m.get("content"), f"{where}[{k}]")}
                if isinstance(m, dict) else None for k, m in enumerate(value)]
    return _as_text(value, where)


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(origin, row) of a JSON Lines file (one object a line) or a JSON file (an array of objects)."""
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield f"{path}:{number}", json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path} line {number}: not valid JSON ({e.msg}, column {e.colno}); "
                                        "fix or remove that line") from None
        return
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {e.lineno}: not valid JSON ({e.msg}); fix the file") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: a .json data file must hold an array of rows (or use .jsonl, one row a line)")
    yield from ((f"{path} item {k}", row) for k, row in enumerate(rows))


def _read_json(files: list[Path], columns: tuple[str, ...]) -> Dataset:
    """The stage's columns of JSON files, content as text; a column no row has stays absent."""
    tables, batch, present = [], [], set()
    try:
        for file in files:
            for origin, row in _json_rows(file):
                if not isinstance(row, dict):
                    raise DataError(f"{origin}: a row must be a JSON object, got {type(row).__name__}")
                present.update(c for c in columns if c in row)
                batch.append({ORIGIN: origin} | {c: _as_column(row.get(c), f"{origin}: {c}") for c in columns})
                if len(batch) == _BATCH:
                    tables.append(pa.Table.from_pylist(batch))
                    batch = []
        if batch:
            tables.append(pa.Table.from_pylist(batch))
        if not tables:
            raise DataError(f"{', '.join(map(str, files))}: no rows")
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataError(f"{', '.join(map(str, files))}: a column holds text in some rows and message lists in "
                        f"others ({e}); use one form per file") from None
    return Dataset(InMemoryTable(table.select([ORIGIN, *(c for c in columns if c in present)])))


def _saved_to_disk(folder: Path) -> bool:
    return (folder / "dataset_dict.json").exists() or (folder / "dataset_info.json").exists()


def split_files(folder: Path, split: str) -> list[Path]:
    """The files a split of a local folder is read from (a save_to_disk folder: all of its files)."""
    if _saved_to_disk(folder):
        return sorted(p for p in folder.rglob("*") if p.is_file())
    for suffix in _FILE_TYPES:
        files = sorted(folder.glob(f"{split}{suffix}")) or sorted(folder.glob(f"{split}-*{suffix}"))
        if files:
            return files
    return []


def _load_local(folder: Path, split: str, columns: tuple[str, ...]) -> Dataset:
    if _saved_to_disk(folder):
        loaded = datasets.load_from_disk(str(folder))
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise DataError(f"{folder}: no split {split!r} (has {', '.join(loaded)})")
            return loaded[split]
        return loaded
    files = split_files(folder, split)
    if not files:
        found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
        raise DataError(f"{folder}: no file for split {split!r} ({split}.jsonl, .json or .parquet); found {found}")
    if files[0].suffix != ".parquet":
        return _read_json(files, columns)
    try:
        return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
    except Exception as e:  # pyarrow and datasets raise many types for a damaged file
        raise DataError(f"{', '.join(map(str, files))}: not a readable parquet file "
                        f"({type(e).__name__}: {str(e)[:200]})") from None


def load_split(source: str, split: str, columns: tuple[str, ...]) -> Dataset:
    """One split of one source: a local folder (json/jsonl/parquet files or save_to_disk) or a hub
    name; `origin` says where each row comes from."""
    path = Path(source).expanduser()
    if path.is_dir():
        part = _load_local(path, split, columns)
        return part if ORIGIN in part.column_names else _with_origin(part, source, split)
    if path.exists():
        raise DataError(f"{source}: point dataset_mixer at a folder holding {split}.jsonl, not at a file")
    try:
        part = datasets.load_dataset(source, split=split)
    except Exception as e:  # the hub raises many types; all mean "not available here"
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise DataError(
            f"dataset {source!r} (split {split!r}) is not a local folder and could not be loaded from the hub"
            + (" (HF_HUB_OFFLINE=1)" if offline else "") + f": {type(e).__name__}: {str(e)[:200]}. "
            "Download it first, or point dataset_mixer at a local folder."
        ) from None
    return _with_origin(part, source, split)


def _with_origin(part: Dataset, source: str, split: str) -> Dataset:
    return part.add_column(ORIGIN, [f"{source} [{split}] row {i}" for i in range(len(part))])


def load_mixture(mixer: dict[str, float], splits: list[str], columns: tuple[str, ...], seed: int) -> DatasetDict:
    """{'train': ..., 'test': ...}: fractions apply to train splits; train rows are shuffled with `seed`."""
    mixed = {}
    for split in splits:
        kind = "train" if "train" in split else "test" if "test" in split else None
        if kind is None:
            raise DataError(f"dataset_splits: {split!r} must contain 'train' or 'test' to say what it is for")
        parts = []
        for source, fraction in mixer.items():
            part = load_split(source, split, columns)
            if len(part) == 0:
                raise DataError(f"{source} [{split}]: no rows")
            missing = [c for c in columns if c not in part.column_names]
            if missing:
                raise DataError(
                    f"{source} [{split}]: missing column(s) {missing}; it has {part.column_names}. "
                    f"This stage needs {list(columns)}."
                )
            part = part.select_columns([*columns, ORIGIN])
            if kind == "train":
                part = part.select(range(math.ceil(fraction * len(part))))
            parts.append(part)
        combined = concatenate_datasets(parts)
        mixed[kind] = combined.shuffle(seed=seed) if kind == "train" else combined
    if "train" not in mixed:
        raise DataError(f"dataset_splits {splits} has no train split")
    return DatasetDict(mixed)
