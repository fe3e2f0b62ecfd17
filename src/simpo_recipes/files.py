"""Result files that survive a crash: whole-file atomic writes, JSON Lines, append-only JSON Lines."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from simpo_recipes.errors import UserError

logger = logging.getLogger("simpo_recipes")


class FileFormatError(UserError, ValueError):
    """A JSON Lines file has a line that is not JSON; the message names the file and line."""


def read_jsonl(path: str | Path, torn_tail_ok: bool = False) -> list[dict]:
    """The rows of a JSON Lines file. With `torn_tail_ok`, a last line that a killed process left
    half-written (invalid JSON, no newline after it) is left out with a warning; any other invalid
    line is an error naming the file and line."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if torn_tail_ok and number == len(lines):
                logger.warning("%s: leaving out its last line, cut short when a process was killed writing it: %r",
                               path, line[:80])
                break
            raise FileFormatError(f"{path} line {number}: not valid JSON ({e.msg})") from None
    return rows


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file, so `path` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
    except OSError as e:  # a full disk reports no file name: name it
        raise OSError(e.errno, e.strerror, str(path)) from None
    os.replace(tmp, path)
    return path


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    return write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_json(path: str | Path, value) -> Path:
    return write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def append_jsonl(path: str | Path, rows: list[dict]) -> None:
    """Append `rows` to `path` in one write. A kill can leave only a cut-off last line, which
    `read_appended_jsonl` removes; every line before it is whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_appended_jsonl(path: str | Path) -> list[dict]:
    """Rows of a file written by `append_jsonl` ([] if there is none). A last line without its
    newline (a kill in mid-write) is cut from the file, so the next append starts on a whole line."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as f:
            f.truncate(end)
    return [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]


def resume_rows(path: str | Path, fingerprint: dict, keys: dict[str, str], id_field: str = "id",
                changed: str = "what it depends on changed") -> dict[str, dict]:
    """{id: row} of the append-only file `path` that are still valid: written under the same
    `fingerprint` (kept in `<path>.meta.json`) with the key `keys` gives their id (rows of ids not in
    `keys` are kept as they are). Other rows are removed from the file, so a rerun does each item
    once; the fingerprint is then (re)written."""
    path = Path(path)
    meta_path = path.with_suffix(".meta.json")
    stored = read_appended_jsonl(path)
    same = meta_path.exists() and json.loads(meta_path.read_text()) == fingerprint
    done = {row[id_field]: row for row in stored if keys.get(row[id_field], row["key"]) == row["key"]} if same else {}
    if stored and not same:
        print(f"{path}: {changed} since it was written; redoing it")
    if len(done) < len(stored):
        write_jsonl(path, list(done.values()))
    write_atomic(meta_path, json.dumps(fingerprint, indent=1))
    return done


def folder_digest(folder: str | Path) -> str:
    """Digest of a model folder's files (names, sizes, mtimes; checkpoints left out): it changes
    when the model is retrained or replaced."""
    root = Path(folder).resolve()
    files = sorted(f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                   for p in root.rglob("*") if p.is_file() and "checkpoint-" not in str(p.relative_to(root)))
    return hashlib.sha256("\n".join(files).encode()).hexdigest()
