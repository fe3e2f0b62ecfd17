"""SimPER (Xiao et al., 2025): preference optimisation by inverse perplexity, no hyperparameter at all.

    L = −exp(ℓ_w) + exp(ℓ_l),  exp ℓ = 1 / perplexity of the response.

No TRL implementation exists: the tests hold it to a hand computation and a per-sequence reference.
"""
from __future__ import annotations

from dataclasses import dataclass

from simpo_recipes.objectives.base import Objective, ObjectiveOutput, PairLogps


@dataclass
class SimPER(Objective):
    name = "simper"
    label = "SimPER"
    formula = "−exp(ℓ_w) + exp(ℓ_l)"

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        chosen_rewards, rejected_rewards = logps.chosen_mean.exp(), logps.rejected_mean.exp()
        return ObjectiveOutput((rejected_rewards - chosen_rewards).mean(), chosen_rewards, rejected_rewards)
