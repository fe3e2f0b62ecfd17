"""Row checks and tokenization for both stages. Nothing is cut: a row that does not fit or is
malformed is dropped, counted by reason, and summarised; too many malformed rows stop the run."""
from __future__ import annotations

import logging
from collections import Counter

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from simpo_recipes.data.chat import BoundaryError, encode_conversation, encode_response
from simpo_recipes.data.loading import DataError

logger = logging.getLogger(__name__)

# Reasons that mean the row itself is broken (count toward max_bad_fraction); the rest are size limits.
MALFORMED = ("missing value", "empty response", "chosen == rejected", "bad role order", "prompts differ")
TOO_LONG = ("prompt longer than max_prompt_length", "longer than max_length")
# Mismatched responses of KTO's KL reference point: the prompt of a row with another row's responses.
KL_COLUMNS = ("kl_chosen_input_ids", "kl_rejected_input_ids")


class RowError(ValueError):
    """Why a row is dropped (the message is the reason)."""


def _check_roles(messages: object) -> list[dict]:
    """Optional system turn, then user/assistant alternating, starting with user."""
    if not isinstance(messages, list) or not messages:
        raise RowError("missing value")
    roles = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            raise RowError("missing value")
        roles.append(m["role"])
    body = roles[1:] if roles[0] == "system" else roles
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(body))]
    if not body or body != expected:
        raise RowError("bad role order")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def split_preference(row: dict) -> tuple[list[dict], dict, dict]:
    """(prompt messages, chosen turn, rejected turn) from UltraFeedback-style or on-policy rows,
    where chosen/rejected are full conversations ending in the assistant turn, or plain strings."""
    prompt, chosen, rejected = row.get("prompt"), row.get("chosen"), row.get("rejected")
    if any(v is None for v in (prompt, chosen, rejected)):
        raise RowError("missing value")
    if isinstance(chosen, str) and isinstance(rejected, str):
        chosen, rejected = [{"role": "assistant", "content": chosen}], [{"role": "assistant", "content": rejected}]
    if not (isinstance(chosen, list) and isinstance(rejected, list) and chosen and rejected):
        raise RowError("missing value")
    if isinstance(prompt, list):
        prompt_messages = prompt
    elif len(chosen) > 1:
        prompt_messages = chosen[:-1]
    else:
        prompt_messages = [{"role": "user", "content": prompt}]
    for history in (chosen[:-1], rejected[:-1]):
        if history and history != prompt_messages:
            raise RowError("prompts differ")
    conversation_w = _check_roles(prompt_messages + chosen[-1:])
    conversation_l = _check_roles(prompt_messages + rejected[-1:])
    if not conversation_w[-1]["content"].strip() or not conversation_l[-1]["content"].strip():
        raise RowError("empty response")
    if conversation_w[-1]["content"].strip() == conversation_l[-1]["content"].strip():
        raise RowError("chosen == rejected")
    return conversation_w[:-1], conversation_w[-1], conversation_l[-1]


def _tokenize_pair(row: dict, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int) -> dict:
    empty = {"prompt_input_ids": [], "chosen_input_ids": [], "rejected_input_ids": []}
    try:
        prompt, chosen, rejected = split_preference(row)
        prompt_ids, chosen_ids = encode_response(tokenizer, prompt, chosen)
        _, rejected_ids = encode_response(tokenizer, prompt, rejected)
        if len(prompt_ids) > max_prompt_length:
            raise RowError("prompt longer than max_prompt_length")
        if len(prompt_ids) + max(len(chosen_ids), len(rejected_ids)) > max_length:
            raise RowError("longer than max_length")
    except (RowError, BoundaryError) as e:
        return empty | {"drop_reason": str(e) if isinstance(e, RowError) else "tokens merge at prompt/response"}
    return {"prompt_input_ids": prompt_ids, "chosen_input_ids": chosen_ids,
            "rejected_input_ids": rejected_ids, "drop_reason": ""}


def _tokenize_conversation(row: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    try:
        messages = _check_roles(row.get("messages"))
        if any(not m["content"].strip() for m in messages if m["role"] == "assistant"):
            raise RowError("empty response")
        if messages[-1]["role"] != "assistant":
            raise RowError("bad role order")
        input_ids, mask = encode_conversation(tokenizer, messages)
        if len(input_ids) > max_length:
            raise RowError("longer than max_length")
    except RowError as e:
        return {"input_ids": [], "assistant_masks": [], "drop_reason": str(e)}
    return {"input_ids": input_ids, "assistant_masks": mask, "drop_reason": ""}


def _drop_and_report(ds: Dataset, original: Dataset, name: str, max_bad_fraction: float) -> Dataset:
    reasons = Counter(ds["drop_reason"])
    kept = reasons.pop("", 0)
    total = len(ds)
    lines = [f"{name}: kept {kept}/{total} rows"] + [f"  dropped {n:>6} ({n / total:.2%}): {r}"
                                                     for r, n in reasons.most_common()]
    logger.warning("\n".join(lines)) if reasons else logger.info(lines[0])
    malformed = sum(n for r, n in reasons.items() if r not in TOO_LONG)
    if kept == 0 or malformed > max_bad_fraction * total:
        bad_rows = [i for i, r in enumerate(ds["drop_reason"]) if r][:3]
        examples = "\n".join(f"  row {i} ({ds[i]['drop_reason']}): {str(original[i])[:300]}" for i in bad_rows)
        problem = ("no row is left" if kept == 0 else
                   f"{malformed} malformed rows exceed max_bad_fraction = {max_bad_fraction}")
        raise DataError("\n".join(lines) + f"\n{name}: {problem}. Examples:\n{examples}\n"
                        "Fix the data (or max_length), or raise max_bad_fraction to accept it.")
    return ds.filter(lambda r: r == "", input_columns="drop_reason").remove_columns("drop_reason")


def prepare_preferences(ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int,
                        max_bad_fraction: float, name: str, num_proc: int | None = None) -> Dataset:
    tokenized = ds.map(_tokenize_pair, fn_kwargs={"tokenizer": tokenizer, "max_length": max_length,
                                                  "max_prompt_length": max_prompt_length},
                       remove_columns=ds.column_names, num_proc=num_proc, desc=f"Tokenizing {name}")
    return _drop_and_report(tokenized, ds, name, max_bad_fraction)


def prepare_conversations(ds: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int,
                          max_bad_fraction: float, name: str, num_proc: int | None = None) -> Dataset:
    tokenized = ds.map(_tokenize_conversation, fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
                       remove_columns=ds.column_names, num_proc=num_proc, desc=f"Tokenizing {name}")
    return _drop_and_report(tokenized, ds, name, max_bad_fraction)


def add_mismatched_responses(ds: Dataset, max_length: int) -> Dataset:
    """KTO's KL sequences: row i's prompt with row i+1's chosen and rejected responses (the last row
    takes the first's). They only estimate the KL reference point, so a response that would not fit
    `max_length` after this prompt is cut to fit."""
    chosen, rejected = ds["chosen_input_ids"], ds["rejected_input_ids"]

    def mismatched(row: dict, i: int) -> dict:
        room = max_length - len(row["prompt_input_ids"])
        j = (i + 1) % len(chosen)
        return {KL_COLUMNS[0]: chosen[j][:room], KL_COLUMNS[1]: rejected[j][:room]}

    return ds.map(mismatched, with_indices=True, desc="Pairing mismatched responses (KTO)")
