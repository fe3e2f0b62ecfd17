"""Ranking losses with an NLL term, no reference: RRHF and SLiC-HF (PAPER.md, Table 3 of the paper).

RRHF (Yuan et al., 2023): max(0, ℓ_l − ℓ_w) + λ·NLL(y_w) — a hinge on mean log-probs.
SLiC-HF (Zhao et al., 2023): max(0, δ − s_w + s_l) + λ·NLL(y_w) — a hinge with margin δ on sums.
No TRL implementation exists: the tests hold both to hand computations and a per-sequence reference.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from simpo_recipes.objectives.base import (
    Objective,
    ObjectiveOutput,
    PairLogps,
    non_negative,
)


@dataclass
class RRHF(Objective):
    name = "rrhf"
    label = "RRHF"
    formula = "max(0, ℓ_l − ℓ_w) + λ·NLL(y_w)"

    sft_weight: float = field(default=1.0, metadata={
        "help": "λ, weight of the token-mean NLL of y_w (paper grid 0.1, 0.5, 1.0, 10.0)."})

    def __post_init__(self) -> None:
        non_negative("sft_weight", self.sft_weight)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        chosen_rewards, rejected_rewards = logps.chosen_mean, logps.rejected_mean
        nll = logps.chosen_nll()
        loss = torch.relu(rejected_rewards - chosen_rewards).mean() + self.sft_weight * nll
        return ObjectiveOutput(loss, chosen_rewards, rejected_rewards, {"nll": nll.detach()})


@dataclass
class SLiCHF(Objective):
    name = "slic"
    label = "SLiC-HF"
    formula = "max(0, δ − s_w + s_l) + λ·NLL(y_w)"

    delta: float = field(default=1.0, metadata={"help": "δ, the margin on summed log-probs (paper grid 0.1-2.0)."})
    sft_weight: float = field(default=0.5, metadata={
        "help": "λ, weight of the token-mean NLL of y_w (paper grid 0.1, 0.5, 1.0, 10.0)."})

    def __post_init__(self) -> None:
        non_negative("delta", self.delta)
        non_negative("sft_weight", self.sft_weight)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        chosen_rewards, rejected_rewards = logps.chosen, logps.rejected
        nll = logps.chosen_nll()
        loss = torch.relu(self.delta - chosen_rewards + rejected_rewards).mean() + self.sft_weight * nll
        return ObjectiveOutput(loss, chosen_rewards, rejected_rewards, {"nll": nll.detach()})
