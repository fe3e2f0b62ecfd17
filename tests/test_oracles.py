"""Every objective TRL 1.16 implements, against TRL on the same token ids: loss, every gradient and the
metrics both define alike. Ours runs its default path (chunked head, packed rows, prompt shared) with
the cached reference pass; the policy is then moved away from the reference, as training does.

TRL conventions that differ, and how the cases line up:
- CPO and ORPO's NLL is a token mean pooled over the micro-batch, as ours. TRL's ORPO also counts the
  prompt tokens: the ORPO case uses one-token prompts, where no prompt token is predicted.
- KTOTrainer takes unpaired examples: each pair becomes a desirable and an undesirable example whose
  KL completions are our mismatched responses, so both estimate the KL term from the same sequences.
- TRL's DPO logs β·(summed log-ratio) as rewards for every loss type; ours logs what each loss ranks
  (IPO and LN-DPO: per-token log-ratios), so rewards are compared for sigmoid only.
"""
import copy

import pytest
import torch
from datasets import Dataset
from preference_cases import perturb_, trainer_for
from transformers import AutoModelForCausalLM, AutoTokenizer

from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.data.chat import encode_response
from simpo_recipes.data.preprocess import add_mismatched_responses

TEXTS = ["Sort the digits 3 1 2.", "1 2 3", "Reverse the word cat.", "tac", "What is 2 plus 2?", "4"] * 20
PAIRS = [  # (prompt, chosen, rejected): rejected both shorter and longer than chosen
    ("Sort the digits 3 1 2.", "1 2 3", "3 1 2 2 2 2 2"),
    ("Reverse the word cat.", "tac", "ta"),
    ("What is 2 plus 2?", "4", "5 5 5 5 5 5"),
    ("Sort the digits 9 1.", "1 9", "9"),
]
TRL_COMMON = dict(report_to="none", bf16=False, gradient_checkpointing=False, use_cpu=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_model("llama3", tmp_path_factory.mktemp("llama3"), TEXTS, vocab_size=300, hidden_size=32)
    return path, AutoTokenizer.from_pretrained(path)


def tokenized_rows(tokenizer, one_token_prompts: bool = False) -> list[dict]:
    rows = []
    for prompt, chosen, rejected in PAIRS:
        user = [{"role": "user", "content": prompt}]
        prompt_ids, chosen_ids = encode_response(tokenizer, user, {"role": "assistant", "content": chosen})
        _, rejected_ids = encode_response(tokenizer, user, {"role": "assistant", "content": rejected})
        if one_token_prompts:
            prompt_ids = [tokenizer.bos_token_id]
        rows.append({"prompt_input_ids": prompt_ids, "chosen_input_ids": chosen_ids, "rejected_input_ids": rejected_ids})
    return rows


def ours(name, hyperparameters, path, rows, tmp_path, moved: bool):
    """(loss, model, logged metrics): the cached pass runs on the starting model, then the policy moves."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    dataset = Dataset.from_list(rows)
    if name == "kto":
        dataset = add_mismatched_responses(dataset, max_length=256)
    trainer = trainer_for(model, name, tmp_path / "ours", objective_args=hyperparameters, train_dataset=dataset)
    assert trainer.scorer.prefix_sharing and trainer.scorer.padding_free  # the fast path is the default
    if moved:
        perturb_(model)
    model.train()
    loss = trainer.compute_loss(model, trainer.data_collator(list(trainer.train_dataset)))
    loss.backward()
    return loss, model, trainer._metrics["train"].pop(), list(trainer.train_dataset)


def policy_and_reference(path, moved: bool):
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    policy = copy.deepcopy(reference)
    return (perturb_(policy) if moved else policy), reference


def assert_same(our_loss, our_model, trl_loss, trl_model):
    assert our_loss.item() == pytest.approx(trl_loss.item(), abs=1e-6)
    for (name, mine), theirs in zip(our_model.named_parameters(), trl_model.parameters()):
        torch.testing.assert_close(mine.grad, theirs.grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def paired_features(rows):
    """CPO/ORPO trainers' tokenized pair format: prompt + response, labels masked on the prompt."""
    features = []
    for row in rows:
        feature = {}
        for side in ("chosen", "rejected"):
            ids = row["prompt_input_ids"] + row[f"{side}_input_ids"]
            feature |= {f"{side}_input_ids": ids, f"{side}_attention_mask": [1] * len(ids),
                        f"{side}_labels": [-100] * len(row["prompt_input_ids"]) + row[f"{side}_input_ids"]}
        features.append(feature)
    return features


STRINGS = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS]


@pytest.mark.parametrize("name, hyperparameters, trl_args", [
    ("simpo", {"beta": 2.5, "gamma": 1.375}, {"loss_type": "simpo", "cpo_alpha": 0.0, "simpo_gamma": 1.375, "beta": 2.5}),
    ("cpo", {"beta": 0.1, "sft_weight": 1.0}, {"loss_type": "sigmoid", "cpo_alpha": 1.0, "beta": 0.1}),
    ("alphapo", {"alpha": 0.25, "beta": 2.5, "gamma": 0.5},
     {"loss_type": "alphapo", "alpha": 0.25, "simpo_gamma": 0.5, "beta": 2.5}),
], ids=["simpo", "cpo", "alphapo"])
def test_trl_cpo_trainer(name, hyperparameters, trl_args, tiny, tmp_path):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    path, tokenizer = tiny
    rows = tokenized_rows(tokenizer)
    our_loss, our_model, logged, _ = ours(name, hyperparameters, path, rows, tmp_path, moved=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    cpo = CPOTrainer(model=model, args=CPOConfig(output_dir=str(tmp_path / "trl"), **trl_args, **TRL_COMMON),
                     train_dataset=Dataset.from_list(STRINGS), processing_class=tokenizer)
    model.train()
    trl_loss, trl_metrics = cpo.get_batch_loss_metrics(model, cpo.data_collator(paired_features(rows)))
    trl_loss.backward()
    assert_same(our_loss, our_model, trl_loss, model)
    keys = ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"]
    if name != "cpo":  # CPO's sigmoid loss logs summed log-probs as logps, ours are per token
        keys += ["logps/chosen", "logps/rejected"]
    for key in keys:
        assert logged[key] == pytest.approx(trl_metrics[key], abs=1e-5), key
    if name == "cpo":
        assert logged["nll"] == pytest.approx(trl_metrics["nll_loss"], abs=1e-6)


def test_trl_orpo_trainer(tiny, tmp_path):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    path, tokenizer = tiny
    rows = tokenized_rows(tokenizer, one_token_prompts=True)
    our_loss, our_model, logged, _ = ours("orpo", {"odds_ratio_weight": 2.0}, path, rows, tmp_path, moved=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    orpo = ORPOTrainer(model=model, args=ORPOConfig(output_dir=str(tmp_path / "trl"), beta=2.0, **TRL_COMMON),
                       train_dataset=Dataset.from_list(STRINGS), processing_class=tokenizer)
    model.train()
    trl_loss, trl_metrics = orpo.get_batch_loss_metrics(model, orpo.data_collator(paired_features(rows)))
    trl_loss.backward()
    assert_same(our_loss, our_model, trl_loss, model)
    assert logged["nll"] == pytest.approx(trl_metrics["nll_loss"], abs=1e-6)
    assert logged["log_odds_ratio"] == pytest.approx(trl_metrics["log_odds_ratio"], abs=1e-6)
    assert logged["rewards/accuracies"] == trl_metrics["rewards/accuracies"]  # log-odds rank as mean log-probs do


@pytest.mark.parametrize("name, hyperparameters, loss_type, beta", [
    ("dpo", {"beta": 0.1}, "sigmoid", 0.1),
    ("ipo", {"tau": 0.5}, "ipo", 0.5),
    ("lndpo", {"beta": 5.0}, "sigmoid_norm", 5.0),
], ids=["dpo", "ipo", "lndpo"])
def test_trl_dpo_trainer(name, hyperparameters, loss_type, beta, tiny, tmp_path):
    from trl import DPOConfig, DPOTrainer

    path, tokenizer = tiny
    rows = tokenized_rows(tokenizer)
    our_loss, our_model, logged, _ = ours(name, hyperparameters, path, rows, tmp_path, moved=True)
    policy, reference = policy_and_reference(path, moved=True)
    dpo = DPOTrainer(model=policy, ref_model=reference, processing_class=tokenizer,
                     args=DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, loss_type=[loss_type], **TRL_COMMON),
                     train_dataset=Dataset.from_list(STRINGS))
    policy.train()
    inputs = dpo.data_collator([{"prompt_ids": r["prompt_input_ids"], "chosen_ids": r["chosen_input_ids"],
                                 "rejected_ids": r["rejected_input_ids"]} for r in rows])
    trl_loss = dpo._compute_loss(policy, inputs, return_outputs=False)
    trl_loss.backward()
    assert_same(our_loss, our_model, trl_loss, policy)
    if name == "dpo":
        trl_metrics = {k: v[-1] for k, v in dpo._metrics["train"].items()}
        for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
            assert logged[key] == pytest.approx(trl_metrics[key], abs=1e-5), key


def test_trl_kto_trainer(tiny, tmp_path):
    from trl import KTOConfig, KTOTrainer

    path, tokenizer = tiny
    hyperparameters = {"beta": 0.5, "desirable_weight": 1.0, "undesirable_weight": 1.5}
    our_loss, our_model, logged, rows = ours("kto", hyperparameters, path, tokenized_rows(tokenizer), tmp_path,
                                             moved=True)
    policy, reference = policy_and_reference(path, moved=True)
    unpaired = [{"prompt": p, "completion": c, "label": label} for p, w, lose in PAIRS
                for c, label in ((w, True), (lose, False))]
    kto = KTOTrainer(model=policy, ref_model=reference, processing_class=tokenizer,
                     args=KTOConfig(output_dir=str(tmp_path / "trl"), train_sampling_strategy="sequential",
                                    per_device_train_batch_size=8, **hyperparameters, **TRL_COMMON),
                     train_dataset=Dataset.from_list(unpaired))
    policy.train()
    examples = [{"prompt_ids": r["prompt_input_ids"], "completion_ids": r[f"{side}_input_ids"],
                 "KL_completion_ids": r[f"kl_{side}_input_ids"], "label": side == "chosen"}
                for r in rows for side in ("chosen", "rejected")]
    trl_loss = kto._compute_loss(policy, kto.data_collator(examples), return_outputs=False)
    trl_loss.backward()
    assert_same(our_loss, our_model, trl_loss, policy)
    trl_metrics = {k: v[-1] for k, v in kto._metrics["train"].items()}
    for key in ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert logged[key] == pytest.approx(trl_metrics[key], abs=1e-5), key
