"""Tiny, offline, random-init models whose tokenizers and chat templates mirror the real families.

Tests and smoke runs need models that behave like Llama-3, Mistral, Zephyr and Gemma-2 where it
matters for preference training -- BOS handling, end-of-turn tokens, pad tokens, template layout --
without the Hugging Face Hub. The vocabulary is a byte-level BPE trained on the caller's texts, so
token ids differ from the real ones; the *structure* (which token is special, who adds BOS, which
tokens stop generation) is what is faithful.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    Gemma2Config,
    GenerationConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
)

# Meta-Llama-3-8B-Instruct template (May 2024 revision): the template, not the tokenizer, emits BOS.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Mistral-7B-Instruct-v0.2 (later revision): system text is folded into the first [INST]; the
# template emits BOS *and* the tokenizer adds one -> double BOS if tokenized with special tokens.
MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system_message is defined %}"
    "{{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only user and assistant roles are supported!') }}"
    "{%- endif %}{%- endfor %}"
)
# HuggingFaceH4/zephyr-7b-beta, verbatim: no BOS in the template (the tokenizer adds it); every
# turn ends with eos + "\n"; role tags are plain text, not special tokens.
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
)
# google/gemma-2-9b-it: BOS in the template and from the tokenizer (double-BOS trap); no system role.
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """What a tiny model must reproduce of one real model family."""

    config_class: type[PretrainedConfig]
    bos: str
    eos: str
    pad: str
    specials: tuple[str, ...]  # every special token, in the real family's id order
    stop_tokens: tuple[str, ...]  # generation_config.eos_token_id: where an assistant turn ends
    chat_template: str
    add_bos: bool  # does the tokenizer's post-processor prepend BOS?
    specials_first: bool  # real ids 0..n (SentencePiece families) vs appended after the BPE vocab
    config_kwargs: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {
    # Llama-3-Instruct: eos <|eot_id|>; no pad upstream, so use the Llama-3.1 reserved pad token.
    "llama3": Family(
        LlamaConfig, "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>",
        ("<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|start_header_id|>",
         "<|end_header_id|>", "<|eot_id|>"),
        ("<|end_of_text|>", "<|eot_id|>"), LLAMA3_TEMPLATE, add_bos=False, specials_first=False,
        config_kwargs={"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}},
    ),
    # Mistral has no pad token upstream; <unk> (id 0) is a real, never-trained token, so pad with it
    # rather than with </s> (padding with eos would mask the real eos out of SFT labels).
    "mistral": Family(
        MistralConfig, "<s>", "</s>", "<unk>", ("<unk>", "<s>", "</s>"), ("</s>",), MISTRAL_TEMPLATE,
        add_bos=True, specials_first=True, config_kwargs={"sliding_window": None},
    ),
    # Zephyr ships pad = </s>; we pad with <unk> for the same reason as Mistral.
    "zephyr": Family(
        MistralConfig, "<s>", "</s>", "<unk>", ("<unk>", "<s>", "</s>"), ("</s>",), ZEPHYR_TEMPLATE,
        add_bos=True, specials_first=True, config_kwargs={"sliding_window": 4096},
    ),
    "gemma2": Family(
        Gemma2Config, "<bos>", "<eos>", "<pad>",
        ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
        ("<eos>", "<end_of_turn>"), GEMMA2_TEMPLATE, add_bos=True, specials_first=True,
        # Tiny but structurally Gemma-2: explicit head_dim, alternating sliding/full layers, softcaps.
        config_kwargs={"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 64},
    ),
}


def _train_tokenizer(family: Family, texts: list[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE on `texts`, with the family's specials as single, never-split tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    leading = list(family.specials) if family.specials_first else []
    # Keep the total at vocab_size even when the specials are appended after training.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - (0 if family.specials_first else len(family.specials)),
        special_tokens=leading, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if not family.specials_first:
        tok.add_special_tokens(list(family.specials))
    steps = [processors.ByteLevel(trim_offsets=False)]
    if family.add_bos:  # like the real Mistral/Gemma tokenizer.json: BOS on every encode
        steps.append(processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B:1",
            special_tokens=[(family.bos, tok.token_to_id(family.bos))]))
    tok.post_processor = processors.Sequence(steps)
    return tok


def build_tiny_model(family: str, output_dir: str | Path, texts: Iterable[str], vocab_size: int = 512,
                     hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                     max_position_embeddings: int = 512, seed: int = 0) -> Path:
    """Train a tokenizer on `texts`, build a random-init `family` model, save both to `output_dir`.

    The result loads with `AutoTokenizer`/`AutoModelForCausalLM.from_pretrained(output_dir)`.
    Same family, sizes, seed and texts give byte-identical tokenizer.json and identical weights.
    """
    spec = FAMILIES[family]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    backend = _train_tokenizer(spec, list(texts), vocab_size)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=spec.bos, eos_token=spec.eos, pad_token=spec.pad,
        unk_token="<unk>" if "<unk>" in spec.specials else None,
        additional_special_tokens=[t for t in spec.specials
                                   if t not in (spec.bos, spec.eos, spec.pad, "<unk>")],
        chat_template=spec.chat_template, model_max_length=max_position_embeddings,
        # No add_bos_token kwarg: transformers 5 drops it from tokenizer_config.json when a
        # tokenizer.json exists, so the post-processor above is the only source of truth.
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in spec.specials}
    stop_ids = [ids[t] for t in spec.stop_tokens]
    config = spec.config_class(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),  # all four families use grouped-query attention
        max_position_embeddings=max_position_embeddings, bos_token_id=ids[spec.bos],
        eos_token_id=ids[spec.eos], pad_token_id=ids[spec.pad], **spec.config_kwargs,
    )
    if family == "gemma2":
        config._attn_implementation = "eager"  # Gemma-2 softcapping is unsupported by sdpa
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # A list, so generate() stops at the end of an assistant turn, not only at end-of-text.
    model.generation_config = GenerationConfig(
        bos_token_id=ids[spec.bos], eos_token_id=stop_ids, pad_token_id=ids[spec.pad])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if family == "gemma2":
        # save_pretrained drops attn_implementation; the loader honours it from config.json.
        cfg = json.loads((out / "config.json").read_text()) | {"attn_implementation": "eager"}
        (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return out


def build_tiny_reward_model(output_dir: str | Path, texts: Iterable[str], seed: int = 0, **sizes: Any) -> Path:
    """A tiny random-init Llama-3-style reward model: `build_tiny_model`'s folder, saved again as a
    sequence-classification model with one logit, so every weight (the score head too) is in the
    checkpoint and it loads the same everywhere."""
    out = build_tiny_model("llama3", output_dir, texts, seed=seed, **sizes)
    torch.manual_seed(seed + 1)
    model = AutoModelForSequenceClassification.from_pretrained(out, num_labels=1)
    model.save_pretrained(out)
    return out
