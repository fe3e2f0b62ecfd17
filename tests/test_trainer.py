"""The SimPO trainer against TRL's CPOTrainer (loss_type="simpo", cpo_alpha=0) as the oracle."""
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.config.arguments import SimPOConfig
from simpo_recipes.data.chat import encode_response
from simpo_recipes.training.collator import PairCollator
from simpo_recipes.training.trainer import SimPOTrainer

TEXTS = ["Sort the digits 3 1 2.", "1 2 3", "Reverse the word cat.", "tac", "What is 2 plus 2?", "4"] * 20
PAIRS = [  # (prompt, chosen, rejected): rejected both shorter and longer than chosen
    ("Sort the digits 3 1 2.", "1 2 3", "3 1 2 2 2 2 2"),
    ("Reverse the word cat.", "tac", "ta"),
    ("What is 2 plus 2?", "4", "5 5 5 5 5 5"),
    ("Sort the digits 9 1.", "1 9", "9"),
]
BETA, GAMMA = 2.5, 1.375


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = build_tiny_model("llama3", tmp_path_factory.mktemp("llama3"), TEXTS, vocab_size=300, hidden_size=32)
    return path, AutoTokenizer.from_pretrained(path)


def tokenized_rows(tokenizer):
    rows = []
    for prompt, chosen, rejected in PAIRS:
        user = [{"role": "user", "content": prompt}]
        prompt_ids, chosen_ids = encode_response(tokenizer, user, {"role": "assistant", "content": chosen})
        _, rejected_ids = encode_response(tokenizer, user, {"role": "assistant", "content": rejected})
        rows.append({"prompt_input_ids": prompt_ids, "chosen_input_ids": chosen_ids,
                     "rejected_input_ids": rejected_ids})
    return rows


def ours(path, tokenizer, tmp_path, **config):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = SimPOConfig(output_dir=str(tmp_path / "ours"), beta=BETA, gamma=GAMMA, report_to="none", **config)
    rows = tokenized_rows(tokenizer)
    trainer = SimPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                           data_collator=PairCollator(tokenizer.pad_token_id), processing_class=tokenizer)
    batch = trainer.data_collator(rows)  # the configured layout: packed with the prompt shared by default
    model.train()
    loss = trainer.compute_loss(model, batch)
    loss.backward()
    return loss, trainer, model


def test_loss_and_gradients_equal_trl_cpo_simpo(tiny, tmp_path):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    path, tokenizer = tiny
    our_loss, trainer, our_model = ours(path, tokenizer, tmp_path)
    assert trainer.data_collator.prefix_sharing and trainer.chunked_head is not None  # the fast path is the default

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    args = CPOConfig(output_dir=str(tmp_path / "trl"), loss_type="simpo", cpo_alpha=0.0, simpo_gamma=GAMMA,
                     beta=BETA, report_to="none", bf16=False, activation_checkpointing=False)
    strings = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])
    cpo = CPOTrainer(model=model, args=args, train_dataset=strings, processing_class=tokenizer)
    # feed TRL exactly our token ids: prompt + response, labels masked on the prompt
    features = []
    for row in tokenized_rows(tokenizer):
        feature = {}
        for side in ("chosen", "rejected"):
            ids = row["prompt_input_ids"] + row[f"{side}_input_ids"]
            feature |= {f"{side}_input_ids": ids, f"{side}_attention_mask": [1] * len(ids),
                        f"{side}_labels": [-100] * len(row["prompt_input_ids"]) + row[f"{side}_input_ids"]}
        features.append(feature)
    model.train()
    trl_loss, trl_metrics = cpo.get_batch_loss_metrics(model, cpo.data_collator(features))
    trl_loss.backward()

    assert our_loss.item() == pytest.approx(trl_loss.item(), abs=1e-6)
    ours_logged = {k: sum(v) / len(v) for k, v in trainer._metrics["train"].items()}
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen"):
        assert ours_logged[key] == pytest.approx(trl_metrics[key], abs=1e-5), key
    for (name, ours_param), trl_param in zip(our_model.named_parameters(), model.parameters()):
        torch.testing.assert_close(ours_param.grad, trl_param.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_sft_weight_adds_token_mean_nll_of_chosen(tiny, tmp_path):
    path, tokenizer = tiny
    base, _, _ = ours(path, tokenizer, tmp_path)
    weighted, _, model = ours(path, tokenizer, tmp_path, sft_weight=0.5)
    batch = PairCollator(tokenizer.pad_token_id)(tokenized_rows(tokenizer))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    n = len(PAIRS)
    nll = torch.nn.functional.cross_entropy(logits[:n, :-1].reshape(-1, logits.shape[-1]),
                                            batch["labels"][:n, 1:].reshape(-1))
    assert weighted.item() == pytest.approx(base.item() + 0.5 * nll.item(), abs=1e-5)
