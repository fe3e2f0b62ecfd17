"""One tokenized example per split, as text and as token ids, with the scored tokens marked [[ ]]:
what `make plan` and the first lines of a stage print. On a new model family it is the first thing
to check: one BOS, the assistant header in the context, the response ending in one end-of-turn."""
from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

OPEN, CLOSE = "[[", "]]"
CONTEXT = 3  # prompt tokens shown before a response, so the boundary is visible
# longer runs are shown as head … tail
MAX_IDS, MAX_CHARS = 24, 240


def _runs(mask: Sequence[bool]) -> list[tuple[int, int, bool]]:
    """(start, end, scored) of each run of equal mask values."""
    runs, start = [], 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or bool(mask[i]) != bool(mask[start]):
            runs.append((start, i, bool(mask[start])))
            start = i
    return runs


def _elide(items: list[str], limit: int, sep: str) -> str:
    if len(items) <= limit:
        return sep.join(items)
    half = limit // 2
    return sep.join(items[:half]) + f"{sep}…({len(items) - 2 * half} more)…{sep}" + sep.join(items[-half:])


def _escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def marked(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], scored: Sequence[bool],
           lead: bool = False) -> tuple[str, str]:
    """(text, ids) of a sequence, each scored run inside [[ ]]; `lead`: the sequence is the tail of a
    longer one (shown after an ellipsis)."""
    texts, numbers = ["…"] if lead else [], ["…"] if lead else []
    for start, end, is_scored in _runs(scored):
        run = list(ids[start:end])
        text = _elide(list(_escaped(tokenizer.decode(run, skip_special_tokens=False))), MAX_CHARS, "")
        number = _elide([str(i) for i in run], MAX_IDS, " ")
        texts.append(f"{OPEN}{text}{CLOSE}" if is_scored else text)
        numbers.append(f"{OPEN}{number}{CLOSE}" if is_scored else number)
    return "'" + "".join(texts) + "'", " ".join(numbers)


def preference_example(tokenizer: PreTrainedTokenizerBase, row: dict) -> list[str]:
    """A tokenized pair: the prompt (context), then chosen and rejected after the prompt's last tokens."""
    prompt = row["prompt_input_ids"]
    text, ids = marked(tokenizer, prompt, [False] * len(prompt))
    lines = [f"prompt   {len(prompt)} tokens, context only", f"  text {text}", f"  ids  {ids}"]
    tail = prompt[-CONTEXT:]
    for name in ("chosen", "rejected"):
        response = row[f"{name}_input_ids"]
        text, ids = marked(tokenizer, tail + response, [False] * len(tail) + [True] * len(response),
                           lead=len(prompt) > CONTEXT)
        lines += [f"{name:<8} {len(response)} scored tokens (|y| = {len(response)}, prompt + response = "
                  f"{len(prompt) + len(response)})", f"  text {text}", f"  ids  {ids}"]
    return lines


def conversation_example(tokenizer: PreTrainedTokenizerBase, row: dict) -> list[str]:
    """A tokenized SFT conversation: the assistant turns (trained) marked."""
    ids, mask = row["input_ids"], row["assistant_masks"]
    text, numbers = marked(tokenizer, ids, mask)
    return [f"conversation {len(ids)} tokens, {sum(mask)} scored (assistant turns)", f"  text {text}",
            f"  ids  {numbers}"]


def split_examples(tokenizer: PreTrainedTokenizerBase, splits: dict, note: str = "") -> list[str]:
    """The first row of each tokenized split, indented under a heading."""
    lines = []
    for split, dataset in splits.items():
        if dataset is None or len(dataset) == 0:
            continue
        row = dataset[0]
        body = preference_example(tokenizer, row) if "prompt_input_ids" in row else conversation_example(tokenizer, row)
        lines.append(f"example, {split} split{note} (scored tokens in {OPEN} {CLOSE}):")
        lines += ["    " + line for line in body]
    return lines
