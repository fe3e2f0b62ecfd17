"""Per-sequence response log-probs of a model on a collated batch: what every objective is computed from.

Two paths give the same numbers (tests hold them within 1e-5): the plain one runs the model's own
head over a padded [2B, T] batch (full logits); the fast one scores only response tokens through
the chunked head (`lm_head.py`) and runs packed rows (`packing.py`), each part on its own. `SequenceScorer`
picks the fast parts a model supports, says once why any is off, and serves the policy, a live
reference model and the cached reference pass alike.
"""
from __future__ import annotations

import logging

import torch

from simpo_recipes.training.lm_head import ChunkedHead, chunked_head_support
from simpo_recipes.training.packing import pair_attention_for

logger = logging.getLogger("simpo_recipes")


def response_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log-probs, token count) of each sequence's response tokens, in fp32.

    logits: [N, T, V] predicting position t+1 at t; labels: [N, T] with −100 off the response."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != -100
    targets = labels.masked_fill(~mask, 0)
    token_logps = target_logps(logits, targets)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def target_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for logits [..., V] and targets [...], in fp32: logit[target] − logsumexp(logits),
    which never materialises a second [..., V] tensor."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


class SequenceScorer:
    """(Σ log π(y|x), |y|) for every sequence of a batch, chosen sequences first, on the fastest path
    the model supports: chunked head, then padding-free packing and prefix sharing."""

    def __init__(self, model, lm_head_chunk_size: int, padding_free: bool, prefix_sharing: bool,
                 role: str = "policy") -> None:
        self.chunked_head = None
        if lm_head_chunk_size:
            reason = chunked_head_support(model)
            if reason is None:
                self.chunked_head = ChunkedHead(model, lm_head_chunk_size)
            else:
                logger.warning("%s: chunked LM head off, the model's full logits are used: %s", role, reason)
        packed = padding_free or prefix_sharing
        if packed:
            attention, reason = pair_attention_for(model)
            if attention is None:
                logger.warning("%s: padding_free and prefix_sharing off, padded batches are used: %s", role, reason)
                packed = False
            else:
                model.set_attn_implementation(attention)
        self.padding_free, self.prefix_sharing = packed and padding_free, packed and prefix_sharing

    @property
    def packed(self) -> bool:
        return self.padding_free or self.prefix_sharing

    def __call__(self, model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """`model` may be wrapped (DDP, DeepSpeed); `batch` is a `PairCollator` batch of this scorer's layout."""
        model_inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
        if "pair_spans" in batch:
            model_inputs |= {"position_ids": batch["position_ids"], "pair_spans": batch["pair_spans"]}
        if self.chunked_head is not None:
            token_logps = self.chunked_head.logps(model, model_inputs, batch["score_index"], batch["score_target"])
        elif "pair_spans" in batch:  # packed rows through the model's own head: full logits, scored positions kept
            logits = model(**model_inputs).logits.flatten(0, 1)[batch["score_index"]]
            token_logps = target_logps(logits, batch["score_target"])
        else:
            return response_logps(model(**model_inputs).logits, batch["labels"])
        sequence, n_sequences = batch["score_sequence"], 2 * batch["pair_count"]
        logps_sum = token_logps.new_zeros(n_sequences).index_add(0, sequence, token_logps)
        return logps_sum, torch.bincount(sequence, minlength=n_sequences)
