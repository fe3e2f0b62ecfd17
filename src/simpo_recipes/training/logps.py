"""Per-sequence response log-probs from full logits: the plain (reference) path the fast one is held to."""
from __future__ import annotations

import torch


def response_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log-probs, token count) of each sequence's response tokens, in fp32.

    logits: [N, T, V] predicting position t+1 at t; labels: [N, T] with −100 off the response."""
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels != -100
    targets = labels.masked_fill(~mask, 0)
    logits = logits.float()
    # log p(target) = logit[target] − logsumexp(logits): never materialises a second [N, T, V] tensor
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)
