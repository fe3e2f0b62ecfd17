"""The fast step (chunked LM head, padding-free packing, prefix sharing) against the reference path
(full logits, padded [2B, T] batch), for every objective and for Llama (SDPA) and Gemma-2 (eager
attention, soft caps, sliding window): loss, every gradient and the logged metrics."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from preference_cases import VOCAB, perturbed, step, tiny_llama
from transformers import AutoModelForCausalLM, Gemma2Config, GPT2Config, MistralConfig

from simpo_demo.task import write_demo_data
from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.config.arguments import ConfigError, PreferenceConfig
from simpo_recipes.objectives import OBJECTIVES
from simpo_recipes.training.collator import PairCollator
from simpo_recipes.training.logps import SequenceScorer, response_logps
from simpo_recipes.training.packing import PAIR_EAGER, PAIR_SDPA
from simpo_recipes.training.reporting import read_metrics

REFERENCE = dict(lm_head_chunk_size=0, padding_free=False, prefix_sharing=False)
FAST = {  # odd chunk sizes put chunk boundaries inside responses
    "chunked head": dict(lm_head_chunk_size=3, padding_free=False, prefix_sharing=False),
    "packed": dict(lm_head_chunk_size=5, padding_free=True, prefix_sharing=False),
    "prompt shared, a row per pair": dict(lm_head_chunk_size=7, padding_free=False, prefix_sharing=True),
    "packed + prompt shared (default)": {},
    "packed + prompt shared, full logits": dict(lm_head_chunk_size=0),
}
REPO = Path(__file__).resolve().parents[1]


def tiny(family: str, **overrides):
    torch.manual_seed(0)
    if family == "llama":
        return tiny_llama()
    if family == "gpt2":  # tied embeddings, and the body is `.transformer`, not `.model`
        config = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=256, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=1, eos_token_id=1)
    elif family == "mistral":  # SDPA with a sliding window shorter than the longest prompt (70)
        config = MistralConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, sliding_window=16)
    else:  # Gemma-2: eager attention; attention soft cap low enough to bind; sliding window on alternate layers
        config = Gemma2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=16,
                              attn_logit_softcapping=0.02, final_logit_softcapping=3.0)
    for key, value in overrides.items():
        setattr(config, key, value)
    config._attn_implementation = "eager" if family == "gemma2" else "sdpa"
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def fast_step(model, tmp_path, name="simpo", **config):
    """A step of `name`; reference objectives score π_ref live with `model` itself, the policy being a
    perturbed copy, so that log-ratios are not zero."""
    if OBJECTIVES[name].needs_reference:
        return step(perturbed(model), name, tmp_path, ref_model=model, **config)
    return step(model, name, tmp_path, objective_args={"beta": 2.5, "gamma": 1.375} if name == "simpo" else None,
                **config)


def assert_equal(got, want):
    assert got[0] == pytest.approx(want[0], abs=1e-5)
    for name, grad in want[1].items():
        torch.testing.assert_close(got[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert got[2] == pytest.approx(want[2], abs=1e-5)


@pytest.mark.parametrize("path", FAST)
@pytest.mark.parametrize("name", OBJECTIVES)
@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_fast_paths_equal_the_reference_for_every_objective(family, name, path, tmp_path):
    model = tiny(family)
    want = fast_step(model, tmp_path, name, **REFERENCE)
    got = fast_step(model, tmp_path, name, **FAST[path])
    assert_equal(got, want)
    assert got[2]["lengths/rejected"] == pytest.approx((7 + 1 + 9 + 30) / 4)
    packed = got[3].data_collator.padding_free or got[3].data_collator.prefix_sharing
    assert packed == (got[3].args.padding_free or got[3].args.prefix_sharing)  # nothing switched itself off


def test_simpo_sft_weight_on_the_fast_path(tmp_path):
    model = tiny("llama")
    args = {"beta": 2.5, "gamma": 1.375, "sft_weight": 0.5}
    assert_equal(step(model, "simpo", tmp_path, objective_args=args),
                 step(model, "simpo", tmp_path, objective_args=args, **REFERENCE))


def test_packing_with_activation_checkpointing(tmp_path):
    model = tiny("llama")
    assert_equal(fast_step(model, tmp_path, "dpo", activation_checkpointing=True),
                 fast_step(model, tmp_path, "dpo", activation_checkpointing=True, **REFERENCE))


def test_tied_embeddings_and_a_body_not_called_model(tmp_path):
    model = tiny("gpt2")
    got = fast_step(model, tmp_path)
    assert got[3].data_collator.prefix_sharing and got[3].scorer.chunked_head is not None
    assert_equal(got, fast_step(model, tmp_path, **REFERENCE))


def test_lora_adapters(tmp_path):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny("llama"), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for adapter in (p for n, p in model.named_parameters() if "lora_B" in n):
        torch.nn.init.normal_(adapter, std=0.1)  # non-zero B: the adapters change the log-probs
    got = fast_step(model, tmp_path)
    assert got[3].scorer.chunked_head is not None and got[3].data_collator.prefix_sharing
    assert_equal(got, fast_step(model, tmp_path, **REFERENCE))


def test_gemma2_packs_with_its_eager_attention_and_soft_caps(tmp_path, caplog):
    model = tiny("gemma2")
    with caplog.at_level(logging.WARNING, logger="simpo_recipes"):
        got = fast_step(model, tmp_path, "kto")
    assert caplog.text == ""  # nothing switched off, nothing to say
    assert got[3].data_collator.padding_free and got[3].data_collator.prefix_sharing
    assert got[3].model.config._attn_implementation == PAIR_EAGER and got[3].scorer.chunked_head.softcap == 3.0
    assert_equal(got, fast_step(model, tmp_path, "kto", **REFERENCE))
    # the attention soft cap and the window bind on these pairs: a packed step ignoring either would differ
    for unbound in (dict(attn_logit_softcapping=None), dict(sliding_window=4096)):
        grads = fast_step(tiny("gemma2", **unbound), tmp_path, "kto", **REFERENCE)[1]
        assert max((grads[name] - got[1][name]).abs().max().item() for name in grads) > 1e-4, unbound


def test_sdpa_sliding_window_in_packed_spans(tmp_path):
    model = tiny("mistral")
    got = fast_step(model, tmp_path)
    assert got[3].model.config._attn_implementation == PAIR_SDPA and got[3].data_collator.prefix_sharing
    assert_equal(got, fast_step(model, tmp_path, **REFERENCE))


def test_unsupported_attention_keeps_padded_batches_and_says_why_once(caplog):
    model = tiny("llama")
    model.config._attn_implementation = "flash_attention_2"  # not installed here: only the scorer's choice runs
    with caplog.at_level(logging.WARNING, logger="simpo_recipes"):
        scorer = SequenceScorer(model, lm_head_chunk_size=8, padding_free=True, prefix_sharing=True)
    assert not scorer.packed and scorer.chunked_head is not None
    assert caplog.messages == ["policy: padding_free and prefix_sharing off, padded batches are used: packed "
                               "attention runs span by span on SDPA or eager attention; this model uses "
                               "'flash_attention_2'"]


def test_scaled_logits_keep_the_full_logits_on_packed_rows(tmp_path, caplog):
    model = tiny("llama")
    model.config.logit_scale = 0.5  # Cohere-style: the chunked head does not apply it
    with caplog.at_level(logging.WARNING, logger="simpo_recipes"):
        got = fast_step(model, tmp_path)
    trainer = got[3]
    assert trainer.scorer.chunked_head is None and trainer.data_collator.prefix_sharing
    assert caplog.messages == ["policy: chunked LM head off, the model's full logits are used: it scales its "
                               "logits (logit_scale)"]
    assert_equal(got, fast_step(model, tmp_path, **REFERENCE))


def test_saved_model_does_not_keep_the_packed_attention(tmp_path):
    _, _, _, trainer = fast_step(tiny("llama"), tmp_path)
    assert trainer.model.config._attn_implementation == PAIR_SDPA
    trainer.model.save_pretrained(tmp_path / "saved")
    assert PAIR_SDPA not in (tmp_path / "saved" / "config.json").read_text()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert reloaded.config._attn_implementation == "sdpa"


def test_collator_layouts():
    rows = [{"prompt_input_ids": [11, 12], "chosen_input_ids": [21], "rejected_input_ids": [31, 32]},
            {"prompt_input_ids": [13], "chosen_input_ids": [22, 23], "rejected_input_ids": [33]}]
    padded = PairCollator(pad_token_id=0)(rows)
    assert padded["input_ids"].tolist() == [[11, 12, 21, 0], [13, 22, 23, 0], [11, 12, 31, 32], [13, 33, 0, 0]]
    assert padded["labels"].tolist() == [[-100, -100, 21, -100], [-100, 22, 23, -100],
                                         [-100, -100, 31, 32], [-100, 33, -100, -100]]
    shared = PairCollator(pad_token_id=0, padding_free=True, prefix_sharing=True)(rows)
    assert shared["input_ids"].tolist() == [[11, 12, 21, 31, 32, 13, 22, 23, 33]]
    assert shared["position_ids"].tolist() == [[0, 1, 2, 2, 3, 0, 1, 2, 1]]
    assert shared["pair_spans"] == [[(0, 3, 0, 0), (3, 5, 0, 2), (5, 8, 0, 0), (8, 9, 5, 6)]]
    # both responses' first token is predicted at the prompt's last position
    assert list(zip(shared["score_index"].tolist(), shared["score_target"].tolist(),
                    shared["score_sequence"].tolist())) == [
        (1, 21, 0), (1, 31, 2), (3, 32, 2), (5, 22, 1), (6, 23, 1), (5, 33, 3)]


def test_fast_path_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="lm_head_chunk_size = -1: must be an integer ≥ 0"):
        PreferenceConfig(output_dir=str(tmp_path), lm_head_chunk_size=-1)



@pytest.mark.slow
def test_fast_path_under_ddp_matches_the_reference(tmp_path):
    """Two processes (gloo): the body hook and span attention run inside DDP's forward."""
    write_demo_data(tmp_path / "data", n_sft=8, n_prefs=32, n_heldout=2, n_test=4)
    texts = [line for f in (tmp_path / "data").rglob("*.jsonl") for line in f.read_text().splitlines()]
    build_tiny_model("llama3", tmp_path / "base", texts, vocab_size=320, hidden_size=32)
    logs = {}
    for name, extra in (("fast", []), ("reference", [f"--{k}={str(v).lower()}" for k, v in REFERENCE.items()])):
        result = subprocess.run(
            [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file",
             str(REPO / "accelerate_configs/cpu.yaml"), "--multi_gpu", "--num_processes", "2",
             str(REPO / "scripts/run_preference.py"), str(REPO / "training_configs/tiny-simpo.yaml"),
             f"--model_name_or_path={tmp_path / 'base'}", f"--dataset_mixer={{{tmp_path / 'data/prefs'}: 1.0}}",
             f"--output_dir={tmp_path / name}", "--max_steps=2", "--per_device_train_batch_size=4",
             "--total_batch_size=8", "--logging_steps=1", "--eval_strategy=no", "--save_strategy=no",
             "--use_cpu=true", *extra],
            cwd=tmp_path, env=os.environ | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "world size 2" in result.stdout + result.stderr
        logs[name] = [line for line in read_metrics(tmp_path / name / "metrics.jsonl") if "loss" in line]
    assert len(logs["fast"]) == 2
    for fast, reference in zip(logs["fast"], logs["reference"]):
        assert fast["loss"] == pytest.approx(reference["loss"], abs=1e-5)
        assert fast["grad_norm"] == pytest.approx(reference["grad_norm"], rel=1e-4)


def test_plain_path_log_probs_match_an_explicit_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 7))
    labels[:, :3] = -100  # prompt
    labels[1, 5:] = -100  # padding
    total, count = response_logps(logits, labels)
    log_probs = torch.log_softmax(logits, -1)
    for i in range(3):
        positions = [t for t in range(1, 7) if labels[i, t] != -100]
        assert count[i].item() == len(positions)
        expected = sum(log_probs[i, t - 1, labels[i, t]].item() for t in positions)
        assert total[i].item() == pytest.approx(expected, abs=1e-5)
