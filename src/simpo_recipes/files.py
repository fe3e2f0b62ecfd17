"""Result files that survive a crash: whole-file atomic writes, JSON Lines."""
from __future__ import annotations

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
