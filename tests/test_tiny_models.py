"""Tiny offline models: family-faithful templates, special tokens, BOS behaviour, determinism."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from simpo_demo.tiny_models import FAMILIES, build_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "What is the capital of France? The capital of France is Paris.",
    "Write a haiku about the sea. Waves fold into foam, salt wind carries gull voices.",
    "How many legs does a spider have? A spider has eight legs.",
    "Translate 'good morning' into German: Guten Morgen.",
] * 4
SIZES = dict(vocab_size=320, hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=128)
CONVERSATION = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"}]

# family -> (2-turn render, prompt-only render with add_generation_prompt=True)
EXPECTED = {
    "llama3": (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ),
    "mistral": ("<s> [INST] Hi there [/INST] Hello!</s>", "<s> [INST] Hi there [/INST]"),
    "zephyr": ("<|user|>\nHi there</s>\n<|assistant|>\nHello!</s>\n", "<|user|>\nHi there</s>\n<|assistant|>\n"),
    "gemma2": (
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n",
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    ),
}
TOKENIZER_ADDS_BOS = {"llama3": False, "mistral": True, "zephyr": True, "gemma2": True}
TEMPLATE_EMITS_BOS = {"llama3": True, "mistral": True, "zephyr": False, "gemma2": True}
STOP_TOKENS = {
    "llama3": ["<|end_of_text|>", "<|eot_id|>"], "mistral": ["</s>"], "zephyr": ["</s>"],
    "gemma2": ["<eos>", "<end_of_turn>"],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build every family once per module: (directory, tokenizer, model)."""
    cache = {}

    def get(family: str):
        if family not in cache:
            path = build_tiny_model(family, tmp_path_factory.mktemp(family), TEXTS, **SIZES)
            cache[family] = (path, AutoTokenizer.from_pretrained(path),
                             AutoModelForCausalLM.from_pretrained(path))
        return cache[family]

    return get


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_chat_template_structure(built, family):
    _, tok, _ = built(family)
    full, prompt = EXPECTED[family]
    assert tok.apply_chat_template(CONVERSATION, tokenize=False) == full
    assert tok.apply_chat_template(CONVERSATION[:1], tokenize=False, add_generation_prompt=True) == prompt


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_special_tokens_are_single_ids_and_pad_is_not_eos(built, family):
    _, tok, model = built(family)
    spec = FAMILIES[family]
    for token in spec.specials:
        ids = tok(token, add_special_tokens=False).input_ids
        assert ids == [tok.convert_tokens_to_ids(token)], token
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (spec.bos, spec.eos, spec.pad)
    assert tok.pad_token_id != tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id and model.config.bos_token_id == tok.bos_token_id


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bos_behaviour(built, family):
    _, tok, _ = built(family)
    bos = tok.bos_token_id
    assert (tok("x").input_ids[0] == bos) is TOKENIZER_ADDS_BOS[family]
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert text.startswith(tok.bos_token) is TEMPLATE_EMITS_BOS[family]
    # Tokenizing a rendered conversation with special tokens: the double-BOS trap where both add it.
    n_bos = tok(text).input_ids[:2].count(bos)
    assert n_bos == TOKENIZER_ADDS_BOS[family] + TEMPLATE_EMITS_BOS[family]
    assert tok(text, add_special_tokens=False).input_ids[:2].count(bos) == TEMPLATE_EMITS_BOS[family]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generation_config_and_forward(built, family):
    path, tok, model = built(family)
    stops = [tok.convert_tokens_to_ids(t) for t in STOP_TOKENS[family]]
    assert model.generation_config.eos_token_id == stops
    assert json.loads((path / "generation_config.json").read_text())["eos_token_id"] == stops
    if family == "gemma2":
        assert model.config._attn_implementation == "eager"
    ids = torch.tensor([tok.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_build_is_deterministic(built, tmp_path, family):
    first, _, model = built(family)
    second = build_tiny_model(family, tmp_path / "again", TEXTS, **SIZES)
    assert (first / "tokenizer.json").read_bytes() == (second / "tokenizer.json").read_bytes()
    again = AutoModelForCausalLM.from_pretrained(second).state_dict()
    reference = model.state_dict()
    assert again.keys() == reference.keys()
    assert all(torch.equal(again[k], reference[k]) for k in reference)


def test_cli_collects_strings_from_json_and_jsonl(tmp_path):
    spec = importlib.util.spec_from_file_location("build_tiny_model", REPO_ROOT / "scripts/build_tiny_model.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    row = {"prompt": "p", "chosen": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
           "score": 1.5}
    (tmp_path / "a.jsonl").write_text(json.dumps(row) + "\n\n" + json.dumps({"text": "t"}) + "\n")
    (tmp_path / "b.json").write_text(json.dumps([{"text": "j"}]))
    texts = cli.read_texts([tmp_path / "a.jsonl", tmp_path / "b.json"])
    assert texts == ["p", "user", "u", "assistant", "a", "t", "j"]
