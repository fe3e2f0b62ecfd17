"""Result files that survive a crash: whole-file atomic writes, JSON Lines."""
from __future__ import annotations

import json
import os
from pathlib import Path


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file, so `path` is never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    return write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_json(path: str | Path, value) -> Path:
    return write_atomic(path, json.dumps(value, indent=2, ensure_ascii=False) + "\n")
