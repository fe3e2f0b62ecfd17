"""Every preference objective on `transformers.Trainer`: one forward over chosen + rejected, the
objective's loss on the per-sequence log-probs, π_ref from the cached pass or a live copy."""
from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import replace

import torch
from datasets import Dataset
from transformers import Trainer

from simpo_recipes.config.arguments import PreferenceConfig
from simpo_recipes.errors import ConfigError
from simpo_recipes.objectives import Objective, ObjectiveOutput, PairLogps
from simpo_recipes.training.collator import PairCollator
from simpo_recipes.training.logps import SequenceScorer
from simpo_recipes.training.reference import (
    add_reference_columns,
    reference_weights,
    score_rows,
)

logger = logging.getLogger("simpo_recipes")


class PairMetrics:
    """Running sums of per-pair metrics over every rank: a logged value is the mean over pairs,
    so a partial last batch weighs by its pairs, not as much as a full one."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.pairs = 0

    def add(self, names: list[str], gathered: torch.Tensor) -> None:
        for name, total in zip(names, gathered.sum(0).tolist()):
            self.sums[name] += total
        self.pairs += gathered.shape[0]

    def pop(self) -> dict[str, float]:
        means = {name: total / self.pairs for name, total in self.sums.items()}
        self.sums.clear()
        self.pairs = 0
        return means


class PreferenceTrainer(Trainer):
    args: PreferenceConfig
    # compute_loss returns a per-micro-batch mean: let Trainer divide by accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args, objective: Objective, ref_model=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.objective = objective
        objective.mean_across_processes = lambda t: self.accelerator.reduce(t, reduction="mean")
        self._metrics = {"train": PairMetrics(), "eval": PairMetrics()}
        config = self.args
        model = self.accelerator.unwrap_model(self.model)
        self.scorer = SequenceScorer(model, config.lm_head_chunk_size, config.padding_free, config.prefix_sharing)
        if isinstance(self.data_collator, PairCollator):
            self.data_collator = replace(self.data_collator, padding_free=self.scorer.padding_free,
                                         prefix_sharing=self.scorer.prefix_sharing)
        self.ref_model = self.ref_scorer = None
        if not objective.needs_reference:
            return
        if config.reference_logps == "cached":
            for split in ("train", "eval"):
                dataset = getattr(self, f"{split}_dataset")
                if isinstance(dataset, Dataset):
                    setattr(self, f"{split}_dataset", add_reference_columns(self, dataset, split))
        elif ref_model is not None:
            self.ref_model = self._prepare_reference(ref_model)
            self.ref_scorer = SequenceScorer(ref_model, config.lm_head_chunk_size, config.padding_free,
                                             config.prefix_sharing, role="reference")
            if self.ref_scorer.packed != self.scorer.packed:
                raise ConfigError("the reference model cannot run the policy's batch layout")
        elif not hasattr(model, "disable_adapter"):
            raise ConfigError("reference_logps: live needs a reference model (or LoRA, whose base model is it)")

    def _prepare_reference(self, ref_model):
        ref_model.requires_grad_(False).eval()
        if self.is_deepspeed_enabled:  # ZeRO-3 shards the reference like the policy
            from trl.models.utils import prepare_deepspeed

            return prepare_deepspeed(ref_model, self.accelerator)
        return self.accelerator.prepare_model(ref_model, evaluation_mode=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sums, counts = self.scorer(model, inputs)
        chosen, rejected = sums.chunk(2)
        chosen_tokens, rejected_tokens = counts.float().chunk(2)
        logps = PairLogps(chosen, rejected, chosen_tokens, rejected_tokens)
        if self.objective.needs_reference:
            reference = self._reference_logps(model, inputs)
            logps.ref_chosen, logps.ref_rejected = reference[:, 0], reference[:, 1]
            if self.objective.needs_kl_sequences:
                with torch.no_grad():
                    kl_sums, _ = self.scorer(model, inputs["kl"])
                logps.kl_logratios = kl_sums - torch.cat([reference[:, 2], reference[:, 3]])
        output = self.objective(logps)
        self._store(logps, output)
        return (output.loss, None) if return_outputs else output.loss

    def _reference_logps(self, model, inputs) -> torch.Tensor:
        """[B, C]: Σ log π_ref of chosen, rejected (and KTO's mismatched chosen, rejected), from the batch
        (cached pass) or from the live reference."""
        if "ref_chosen_logps" in inputs:
            names = ["ref_chosen_logps", "ref_rejected_logps"]
            if self.objective.needs_kl_sequences:
                names += ["ref_kl_chosen_logps", "ref_kl_rejected_logps"]
            return torch.stack([inputs[name] for name in names], dim=1)
        if self.ref_model is not None:
            reference, scorer, weights = self.ref_model, self.ref_scorer, contextlib.nullcontext()
        else:  # LoRA: the policy with its adapters disabled is the starting model
            reference, scorer = model, self.scorer
            weights = reference_weights(self.accelerator.unwrap_model(model))
        with torch.no_grad(), weights:
            return score_rows(scorer, reference, inputs)

    @torch.no_grad()
    def _store(self, logps: PairLogps, output: ObjectiveOutput) -> None:
        pairs = logps.chosen.shape[0]
        per_pair = {
            "rewards/chosen": output.chosen_rewards,
            "rewards/rejected": output.rejected_rewards,
            "rewards/margins": output.chosen_rewards - output.rejected_rewards,
            "rewards/accuracies": (output.chosen_rewards > output.rejected_rewards).float(),
            "logps/chosen": logps.chosen_mean,
            "logps/rejected": logps.rejected_mean,
            "lengths/chosen": logps.chosen_tokens,
            "lengths/rejected": logps.rejected_tokens,
        }
        for name, value in output.metrics.items():  # batch-level values count once per pair of the batch
            value = torch.as_tensor(value, dtype=torch.float32, device=logps.chosen.device)
            per_pair[name] = value.expand(pairs) if value.dim() == 0 else value
        stacked = torch.stack([v.detach().float() for v in per_pair.values()], dim=1)
        gathered = self.accelerator.gather_for_metrics(stacked)  # every rank's pairs, not rank 0's only
        self._metrics["train" if self.model.training else "eval"].add(list(per_pair), gathered)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        if self._metrics[split].pairs:
            logs |= {prefix + name: value for name, value in self._metrics[split].pop().items()}
        super().log(logs, start_time)
