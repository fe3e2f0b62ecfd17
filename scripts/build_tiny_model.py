"""Build an offline tiny model (random weights, family-faithful tokenizer and chat template).

Example:
    python scripts/build_tiny_model.py --family llama3 --output_dir outputs/tiny-llama3 \
        --data data/prefs.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simpo_recipes.cli import run_cli
from simpo_recipes.errors import UserError
from simpo_recipes.files import read_jsonl


def iter_strings(obj: Any) -> Iterator[str]:
    """Every string inside a JSON value (message lists, nested dicts), in document order."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from iter_strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from iter_strings(value)


def read_texts(paths: list[Path]) -> list[str]:
    """Strings from JSON (a list of rows or one object) and JSONL files, as tokenizer training text."""
    texts: list[str] = []
    for path in paths:
        if not path.is_file():
            raise UserError(f"--data {path}: no such file (make demo-data writes the demo's)")
        try:
            rows = read_jsonl(path) if path.suffix == ".jsonl" else [json.loads(path.read_text(encoding="utf-8"))]
        except json.JSONDecodeError as e:
            raise UserError(f"--data {path} line {e.lineno}: not valid JSON ({e.msg})") from None
        for row in rows:
            texts.extend(iter_strings(row))
    return texts


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from simpo_demo.tiny_models import FAMILIES, build_tiny_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument("--data", required=True, nargs="+", type=Path, help="JSON/JSONL files")
    parser.add_argument("--vocab_size", type=int, default=512)
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--max_position_embeddings", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    texts = read_texts(args.data)
    if not texts:
        parser.error("no strings found in --data")
    out = build_tiny_model(
        args.family, args.output_dir, texts, vocab_size=args.vocab_size, hidden_size=args.hidden_size,
        num_layers=args.num_layers, num_heads=args.num_heads,
        max_position_embeddings=args.max_position_embeddings, seed=args.seed,
    )
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"built {args.family} tiny model in {out}: {n_params:,} parameters, vocab {len(tokenizer)} "
          f"(trained on {len(texts)} strings); bos={tokenizer.bos_token} eos={tokenizer.eos_token} "
          f"pad={tokenizer.pad_token} stop ids={model.generation_config.eos_token_id}")


if __name__ == "__main__":
    run_cli(main)
