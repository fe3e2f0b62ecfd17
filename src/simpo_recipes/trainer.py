"""SimPO on `transformers.Trainer`: no reference model, one forward over chosen + rejected."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import torch
from transformers import Trainer

from simpo_recipes.configs import SimPOConfig
from simpo_recipes.loss import response_logps, simpo_loss


@dataclass
class PairCollator:
    """Right-pads prompt+chosen and prompt+rejected into one [2B, T] batch (chosen first).
    Labels are −100 on the prompt and padding, so only response tokens are scored."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        sequences, labels = [], []
        for side in ("chosen_input_ids", "rejected_input_ids"):
            for row in rows:
                prompt, response = row["prompt_input_ids"], row[side]
                sequences.append(prompt + response)
                labels.append([-100] * len(prompt) + response)
        width = max(len(s) for s in sequences)
        batch = {
            "input_ids": [s + [self.pad_token_id] * (width - len(s)) for s in sequences],
            "attention_mask": [[1] * len(s) + [0] * (width - len(s)) for s in sequences],
            "labels": [lab + [-100] * (width - len(lab)) for lab in labels],
        }
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


class SimPOTrainer(Trainer):
    args: SimPOConfig
    # compute_loss returns a per-micro-batch mean: let Trainer divide by accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        logps_sum, n_tokens = response_logps(outputs.logits, inputs["labels"])
        avg_logps = logps_sum / n_tokens.clamp(min=1)
        chosen, rejected = avg_logps.chunk(2)
        args = self.args
        losses = simpo_loss(chosen, rejected, args.beta, args.effective_gamma, args.loss_type, args.label_smoothing)
        loss = losses.mean()
        if args.sft_weight > 0:
            # token-mean NLL of the chosen responses, from the log-probs already computed
            chosen_sum, chosen_tokens = logps_sum.chunk(2)[0], n_tokens.chunk(2)[0]
            loss = loss - args.sft_weight * chosen_sum.sum() / chosen_tokens.sum().clamp(min=1)
        self._store(losses, chosen, rejected, n_tokens)
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def _store(self, losses, chosen, rejected, n_tokens) -> None:
        beta = self.args.beta
        chosen_len, rejected_len = n_tokens.chunk(2)
        per_pair = {
            "rewards/chosen": beta * chosen,
            "rewards/rejected": beta * rejected,
            "rewards/margins": beta * (chosen - rejected),
            "rewards/accuracies": (chosen > rejected).float(),
            "logps/chosen": chosen,
            "logps/rejected": rejected,
            "lengths/chosen": chosen_len.float(),
            "lengths/rejected": rejected_len.float(),
        }
        stacked = torch.stack([v.detach().float() for v in per_pair.values()], dim=1)
        gathered = self.accelerator.gather_for_metrics(stacked)  # every rank's pairs, not rank 0's only
        split = "train" if self.model.training else "eval"
        for name, column in zip(per_pair, gathered.mean(0).tolist()):
            self._metrics[split][name].append(column)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        for name, values in self._metrics[split].items():
            logs[prefix + name] = sum(values) / len(values)
        if self._metrics[split]:
            logs[prefix + "gamma"] = self.args.effective_gamma
        self._metrics[split].clear()
        super().log(logs, start_time)
