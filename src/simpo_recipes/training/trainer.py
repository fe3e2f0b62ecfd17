"""SimPO on `transformers.Trainer`: no reference model, one forward over chosen + rejected."""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import replace

import torch
from transformers import Trainer

from simpo_recipes.config.arguments import SimPOConfig
from simpo_recipes.objectives.simpo import simpo_loss
from simpo_recipes.training.collator import PairCollator
from simpo_recipes.training.lm_head import ChunkedHead, chunked_head_support
from simpo_recipes.training.logps import response_logps
from simpo_recipes.training.packing import PAIR_ATTENTION, pair_attention_support

logger = logging.getLogger("simpo_recipes")


class SimPOTrainer(Trainer):
    args: SimPOConfig
    # compute_loss returns a per-micro-batch mean: let Trainer divide by accumulation steps
    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.chunked_head = None
        model, config = self.accelerator.unwrap_model(self.model), self.args
        if config.lm_head_chunk_size:
            reason = chunked_head_support(model)
            if reason is None:
                self.chunked_head = ChunkedHead(model, config.lm_head_chunk_size)
            else:
                logger.warning("chunked LM head off, the reference path is used: %s", reason)
        packed = self.chunked_head is not None and (config.padding_free or config.prefix_sharing)
        if packed and (reason := pair_attention_support(model, config.max_length)):
            logger.warning("padding_free and prefix_sharing off, padded batches are used: %s", reason)
            packed = False
        if packed:
            model.set_attn_implementation(PAIR_ATTENTION)
        if isinstance(self.data_collator, PairCollator):
            self.data_collator = replace(self.data_collator, padding_free=packed and config.padding_free,
                                         prefix_sharing=packed and config.prefix_sharing)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logps_sum, n_tokens, outputs = self._sequence_logps(model, inputs)
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

    def _sequence_logps(self, model, inputs):
        """(sum of response log-probs, response length) per sequence, chosen first; and the model outputs
        on the reference path (full logits), None on the chunked one."""
        model_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                        "use_cache": False}
        if self.chunked_head is None:
            outputs = model(**model_inputs)
            return *response_logps(outputs.logits, inputs["labels"]), outputs
        if "pair_spans" in inputs:
            model_inputs |= {"position_ids": inputs["position_ids"], "pair_spans": inputs["pair_spans"]}
        token_logps = self.chunked_head.logps(model, model_inputs, inputs["score_index"], inputs["score_target"])
        sequence, n_sequences = inputs["score_sequence"], 2 * inputs["pair_count"]
        logps_sum = token_logps.new_zeros(n_sequences).index_add(0, sequence, token_logps)
        return logps_sum, torch.bincount(sequence, minlength=n_sequences), None

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
