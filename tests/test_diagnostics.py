"""Diagnostics of a preference run: the chosen/rejected log-prob trend and its one-time warning, and
KL to the starting model on sampled held-out answers (batched path against a plain per-answer one)."""
import logging

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerControl, TrainerState

from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.config.arguments import PreferenceConfig
from simpo_recipes.data.chat import encode_prompt, encode_response
from simpo_recipes.objectives import OBJECTIVES
from simpo_recipes.training.collator import PairCollator
from simpo_recipes.training.diagnostics import LogProbTrendCallback, add_kl_eval, answer_kl, sampled_kl
from simpo_recipes.training.trainer import PreferenceTrainer

TEXTS = ["Sort the digits 3 1 2.", "1 2 3", "Reverse the word cat.", "tac", "What is 2 plus 2?", "4"] * 20
PROMPTS = ["Sort the digits 3 1 2.", "What is 2 plus 2?", "Reverse the word cat, please, now."]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_model("llama3", tmp_path_factory.mktemp("llama3"), TEXTS, vocab_size=300, hidden_size=32)
    return path, AutoTokenizer.from_pretrained(path)


def log(callback, step, chosen, rejected):
    logs = {"loss": 1.0, "logps/chosen": chosen, "logps/rejected": rejected}
    callback.on_log(None, TrainerState(global_step=step), TrainerControl(), logs=logs)
    return logs


def test_trend_is_logged_and_displacement_warned_once(caplog):
    callback = LogProbTrendCallback(drop_warning=0.5, learning_rate=1e-5)
    with caplog.at_level(logging.WARNING, logger="simpo_recipes"):
        assert log(callback, 10, -1.0, -1.2) | {} == {"loss": 1.0, "logps/chosen": -1.0, "logps/rejected": -1.2,
                                                      "logps/chosen_change": 0.0, "logps/rejected_change": 0.0}
        assert log(callback, 20, -1.4, -2.0)["logps/chosen_change"] == pytest.approx(-0.4)
        assert not caplog.records  # a 0.4 drop is under the threshold
        logs = log(callback, 30, -1.75, -2.5)
        log(callback, 40, -2.5, -3.5)
    assert logs["logps/chosen_change"] == pytest.approx(-0.75) and logs["logps/rejected_change"] == pytest.approx(-1.3)
    [warning] = caplog.records  # once, though the drop grew further
    assert "likelihood displacement at step 30" in warning.message and "fell 0.75 nats/token" in warning.message
    assert "learning rate too high" in warning.message and "learning_rate = 1e-05" in warning.message
    silent = LogProbTrendCallback(drop_warning=None, learning_rate=1e-5)
    caplog.clear()
    log(silent, 1, -1.0, -1.0)
    assert log(silent, 2, -9.0, -9.0)["logps/chosen_change"] == -8.0 and not caplog.records


def test_batched_kl_equals_the_plain_per_answer_sum(tiny):
    path, tokenizer = tiny
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    start = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = [encode_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]  # unequal lengths
    stop, pad = [tokenizer.convert_tokens_to_ids("<|eot_id|>")], tokenizer.pad_token_id
    same, per_token, _ = sampled_kl(policy, start, prompts, stop, pad, max_new_tokens=8, seed=0)
    assert abs(same) < 1e-6 and abs(per_token) < 1e-6  # the starting model itself
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    mean, per_token, answers = sampled_kl(policy, start, prompts, stop, pad, max_new_tokens=8, seed=0, batch_size=2)
    plain = [answer_kl(policy, start, p, a) for p, a in zip(prompts, answers)]
    assert mean == pytest.approx(sum(plain) / len(plain), rel=1e-4) and mean > 0
    assert per_token == pytest.approx(sum(plain) / sum(map(len, answers)), rel=1e-4)
    assert sampled_kl(policy, start, prompts, stop, pad, 8, seed=0, batch_size=2)[2] == answers  # seeded


def test_kl_to_start_is_logged_at_each_evaluation(tiny, tmp_path):
    path, tokenizer = tiny
    rows = []
    for prompt in PROMPTS:
        user = [{"role": "user", "content": prompt}]
        prompt_ids, chosen = encode_response(tokenizer, user, {"role": "assistant", "content": "1 2 3"})
        _, rejected = encode_response(tokenizer, user, {"role": "assistant", "content": "tac tac"})
        rows.append({"prompt_input_ids": prompt_ids, "chosen_input_ids": chosen, "rejected_input_ids": rejected})
    args = PreferenceConfig(output_dir=str(tmp_path), report_to="none", learning_rate=5e-2, max_steps=3,
                            per_device_train_batch_size=3, eval_strategy="steps", eval_steps=3, logging_steps=1,
                            save_strategy="no", use_cpu=True, kl_eval_prompts=2, kl_max_new_tokens=6)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    data = Dataset.from_list(rows)
    trainer = PreferenceTrainer(model=model, args=args, objective=OBJECTIVES["simpo"](), train_dataset=data,
                                eval_dataset=data, data_collator=PairCollator(tokenizer.pad_token_id),
                                processing_class=tokenizer)
    add_kl_eval(trainer, str(path), data, args.kl_eval_prompts, args.kl_max_new_tokens)
    def logged():
        return [line["eval_kl_to_start"] for line in trainer.state.log_history if "eval_kl_to_start" in line]

    trainer.evaluate()  # before training: the policy is the starting model
    [before] = logged()
    trainer.train()  # evaluates at its last step
    [after] = logged()
    assert abs(before) < 1e-6 and after > 1e-3
