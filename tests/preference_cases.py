"""Shared by the objective tests: tiny models, pairs of token ids, and one step of the PreferenceTrainer."""
from __future__ import annotations

import copy

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from simpo_recipes.config.arguments import PreferenceConfig
from simpo_recipes.objectives import OBJECTIVES
from simpo_recipes.training.collator import PairCollator
from simpo_recipes.training.trainer import PreferenceTrainer

VOCAB = 97
# (prompt, chosen, rejected) lengths: prompts from 2 to 70 tokens, rejected shorter and longer than chosen
LENGTHS = ((5, 3, 7), (70, 4, 1), (2, 9, 9), (12, 1, 30))


def tiny_llama(seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    config._attn_implementation = "sdpa"
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def perturb_(model, scale: float = 0.05, seed: int = 1):
    """Move every weight a little, in place: a policy that has left its reference."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model


def perturbed(model, scale: float = 0.05, seed: int = 1):
    """A perturbed copy (see perturb_)."""
    return perturb_(copy.deepcopy(model), scale, seed)


def pairs(lengths=LENGTHS, kl: bool = True, seed: int = 0) -> list[dict]:
    """Rows of random ids; with `kl`, KTO's mismatched responses (row i takes row i+1's, as in preprocessing)."""
    g = torch.Generator().manual_seed(seed)
    ids = lambda n: torch.randint(1, VOCAB, (n,), generator=g).tolist()  # noqa: E731
    rows = [{"prompt_input_ids": ids(p), "chosen_input_ids": ids(c), "rejected_input_ids": ids(r)}
            for p, c, r in lengths]
    if kl:
        for i, row in enumerate(rows):
            other = rows[(i + 1) % len(rows)]
            row["kl_chosen_input_ids"], row["kl_rejected_input_ids"] = other["chosen_input_ids"], other["rejected_input_ids"]
    return rows


def objective(name: str, **hyperparameters):
    return OBJECTIVES[name](**hyperparameters)


def trainer_for(model, name: str, tmp_path, ref_model=None, objective_args: dict | None = None, train_dataset=None,
                **config) -> PreferenceTrainer:
    config = {"reference_logps": "live" if ref_model is not None else "cached"} | config
    args = PreferenceConfig(output_dir=str(tmp_path), report_to="none", max_length=256, max_prompt_length=128,
                            objective=name, per_device_eval_batch_size=2, **config)
    return PreferenceTrainer(model=model, ref_model=ref_model, args=args, train_dataset=train_dataset,
                             objective=objective(name, **(objective_args or {})),
                             data_collator=PairCollator(pad_token_id=0))


def step(model, name: str, tmp_path, rows=None, ref_model=None, objective_args=None, **config):
    """One compute_loss + backward on `rows` through the trainer's own collator:
    (loss, {parameter: grad}, logged metrics, trainer). Reference objectives use `ref_model` live."""
    model = copy.deepcopy(model).train()
    ref_model = copy.deepcopy(ref_model) if ref_model is not None else None
    trainer = trainer_for(model, name, tmp_path, ref_model=ref_model, objective_args=objective_args, **config)
    loss = trainer.compute_loss(model, trainer.data_collator(rows or pairs()))
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters()}, trainer._metrics["train"].pop(), trainer
