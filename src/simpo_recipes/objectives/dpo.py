"""The DPO family: rewards are log-ratios to the reference model, r(y) = log π_θ(y|x) − log π_ref(y|x).

DPO (Rafailov et al., 2023): −log σ(β h), h = r(y_w) − r(y_l).
IPO (Azar et al., 2023): (h̄ − 1/(2τ))², h̄ on per-token log-ratios r/|y| — TRL's form, which the IPO
  authors confirmed matches their results and which TRL has always used; PAPER.md writes h.
LN-DPO: DPO on per-token log-ratios, −log σ(β h̄) (TRL's sigmoid_norm; wants β ≥ 5).
R-DPO (Park et al., 2024): −log σ(β h + α(|y_w| − |y_l|)). Maximising E[r] − β·KL − α|y| gives the
  Bradley–Terry reward β·log-ratio + α|y|, hence the + sign: a longer chosen response already earns
  part of the margin, so the log-ratio is pushed less to favour length.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
class ReferenceObjective(Objective):
    needs_reference = True


@dataclass
class DPO(ReferenceObjective):
    name = "dpo"
    label = "DPO"
    formula = "−log σ(β h), h = log-ratio(y_w) − log-ratio(y_l)"

    beta: float = field(default=0.01, metadata={"help": "β, inverse strength of the KL anchor (paper: 0.01)."})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "Conservative DPO: the label is flipped with this probability, in [0, 0.5)."})

    def __post_init__(self) -> None:
        positive("beta", self.beta)
        check(0 <= self.label_smoothing < 0.5, f"label_smoothing = {self.label_smoothing}: must be in [0, 0.5)")

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        chosen_rewards, rejected_rewards = self.beta * logps.chosen_logratios, self.beta * logps.rejected_logratios
        losses = sigmoid_loss(chosen_rewards - rejected_rewards, self.label_smoothing)
        return ObjectiveOutput(losses.mean(), chosen_rewards, rejected_rewards)


@dataclass
class IPO(ReferenceObjective):
    name = "ipo"
    label = "IPO"
    formula = "(h̄ − 1/(2τ))², h̄ on per-token log-ratios"

    tau: float = field(default=0.1, metadata={"help": "τ, the regularisation (paper grid 0.01-1.0)."})

    def __post_init__(self) -> None:
        positive("tau", self.tau)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        chosen_rewards = logps.chosen_logratios / logps.chosen_tokens.clamp(min=1)
        rejected_rewards = logps.rejected_logratios / logps.rejected_tokens.clamp(min=1)
        losses = (chosen_rewards - rejected_rewards - 1 / (2 * self.tau)) ** 2
        return ObjectiveOutput(losses.mean(), chosen_rewards, rejected_rewards)


@dataclass
class LNDPO(ReferenceObjective):
    name = "lndpo"
    label = "LN-DPO"
    formula = "−log σ(β h̄), h̄ on per-token log-ratios"

    beta: float = field(default=5.0, metadata={"help": "β; length-normalised log-ratios are small: needs β ≥ 5."})

    def __post_init__(self) -> None:
        positive("beta", self.beta)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        chosen_rewards = self.beta * logps.chosen_logratios / logps.chosen_tokens.clamp(min=1)
        rejected_rewards = self.beta * logps.rejected_logratios / logps.rejected_tokens.clamp(min=1)
        return ObjectiveOutput(sigmoid_loss(chosen_rewards - rejected_rewards).mean(), chosen_rewards,
                               rejected_rewards)


@dataclass
class RDPO(ReferenceObjective):
    name = "rdpo"
    label = "R-DPO"
    formula = "−log σ(β h + α(|y_w| − |y_l|))"

    beta: float = field(default=0.01, metadata={"help": "β, as in DPO (paper grid 0.01-0.1)."})
    alpha: float = field(default=0.05, metadata={"help": "α, weight of the length regulariser (paper grid 0.05-1.0)."})

    def __post_init__(self) -> None:
        positive("beta", self.beta)
        non_negative("alpha", self.alpha)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        chosen_rewards = self.beta * logps.chosen_logratios + self.alpha * logps.chosen_tokens
        rejected_rewards = self.beta * logps.rejected_logratios + self.alpha * logps.rejected_tokens
        return ObjectiveOutput(sigmoid_loss(chosen_rewards - rejected_rewards).mean(), chosen_rewards,
                               rejected_rewards)
