"""Reference-free objectives on summed log-probs with an NLL term: CPO and ORPO.

CPO (Xu et al., 2024): −log σ(β s_w − β s_l) + λ·NLL(y_w), λ = 1 (`sft_weight`).
ORPO (Hong et al., 2024): NLL(y_w) − λ log σ(log odds(y_w) − log odds(y_l)), odds(y) = p/(1 − p),
  p = exp ℓ. TRL's ORPO also counts the prompt tokens in its NLL; here, as everywhere, only the response.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from simpo_recipes.objectives.base import (
    Objective,
    ObjectiveOutput,
    PairLogps,
    check,
    non_negative,
    positive,
    sigmoid_loss,
)


@dataclass
class CPO(Objective):
    name = "cpo"
    label = "CPO"
    formula = "−log σ(β s_w − β s_l) + λ·NLL(y_w)"

    beta: float = field(default=0.1, metadata={"help": "β on summed log-probs (paper grid 0.01-0.1)."})
    sft_weight: float = field(default=1.0, metadata={"help": "λ, weight of the token-mean NLL of y_w (paper: 1)."})
    label_smoothing: float = field(default=0.0, metadata={"help": "Conservative-loss label smoothing in [0, 0.5)."})

    def __post_init__(self) -> None:
        positive("beta", self.beta)
        non_negative("sft_weight", self.sft_weight)
        check(0 <= self.label_smoothing < 0.5, f"label_smoothing = {self.label_smoothing}: must be in [0, 0.5)")

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        chosen_rewards, rejected_rewards = self.beta * logps.chosen, self.beta * logps.rejected
        nll = logps.chosen_nll()
        losses = sigmoid_loss(chosen_rewards - rejected_rewards, self.label_smoothing)
        return ObjectiveOutput(losses.mean() + self.sft_weight * nll, chosen_rewards, rejected_rewards,
                               {"nll": nll.detach()})


def log_odds(mean_logps: torch.Tensor) -> torch.Tensor:
    """log(p / (1 − p)) with p = exp ℓ; log(1 − p) = log(−expm1(ℓ)) stays accurate for p near 0 and 1."""
    return mean_logps - torch.log(-torch.expm1(mean_logps))


@dataclass
class ORPO(Objective):
    name = "orpo"
    label = "ORPO"
    formula = "NLL(y_w) − λ log σ(log odds(y_w) − log odds(y_l)), odds = p/(1−p), p = exp ℓ"

    odds_ratio_weight: float = field(default=1.0, metadata={
        "help": "λ, weight of the odds-ratio term (TRL's beta; paper grid 0.1-2.0; Llama-3-Base 2.0)."})

    def __post_init__(self) -> None:
        positive("odds_ratio_weight", self.odds_ratio_weight)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        chosen_rewards, rejected_rewards = log_odds(logps.chosen_mean), log_odds(logps.rejected_mean)
        odds_ratio_term = torch.nn.functional.logsigmoid(chosen_rewards - rejected_rewards)
        nll = logps.chosen_nll()
        loss = nll - self.odds_ratio_weight * odds_ratio_term.mean()
        return ObjectiveOutput(loss, chosen_rewards, rejected_rewards,
                               {"nll": nll.detach(), "log_odds_ratio": odds_ratio_term.detach()})
