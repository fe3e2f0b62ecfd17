"""KTO (Ethayarajh et al., 2024) trained from preference pairs: chosen = desirable, rejected = undesirable.

    L = ½ [ λ_w (1 − σ(β r(y_w) − z)) + λ_l (1 − σ(z − β r(y_l))) ],  r = log π_θ − log π_ref,

with the reference point z = β · max(0, KL̂), KL̂ the mean log-ratio of mismatched sequences (each
prompt with another pair's chosen and rejected responses), averaged over every process and never
differentiated. The ½ is TRL's mean over the 2B examples of B pairs. The mismatched responses are
fixed per row when the data is prepared (row i takes row i+1's), not drawn from the micro-batch,
so the cached reference pass and any batch order see the same sequences.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from simpo_recipes.objectives.base import ObjectiveOutput, PairLogps, positive
from simpo_recipes.objectives.dpo import ReferenceObjective


@dataclass
class KTO(ReferenceObjective):
    name = "kto"
    label = "KTO"
    formula = "½[λ_w(1 − σ(β r_w − z)) + λ_l(1 − σ(z − β r_l))], z = β·KL̂"
    needs_kl_sequences = True

    beta: float = field(default=0.1, metadata={"help": "β (paper grid 0.01-0.1)."})
    desirable_weight: float = field(default=1.0, metadata={"help": "λ_w, weight of the chosen (desirable) term."})
    undesirable_weight: float = field(default=1.0, metadata={"help": "λ_l, weight of the rejected (undesirable) term."})

    def __post_init__(self) -> None:
        positive("beta", self.beta)
        positive("desirable_weight", self.desirable_weight)
        positive("undesirable_weight", self.undesirable_weight)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        kl = self.mean_across_processes(logps.kl_logratios.detach().mean()).clamp(min=0)
        chosen_rewards, rejected_rewards = self.beta * logps.chosen_logratios, self.beta * logps.rejected_logratios
        chosen_losses = 1 - torch.sigmoid(chosen_rewards - self.beta * kl)
        rejected_losses = 1 - torch.sigmoid(self.beta * kl - rejected_rewards)
        losses = (self.desirable_weight * chosen_losses + self.undesirable_weight * rejected_losses) / 2
        return ObjectiveOutput(losses.mean(), chosen_rewards, rejected_rewards, {"kl": kl})
