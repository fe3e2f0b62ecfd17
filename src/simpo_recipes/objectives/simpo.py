"""The SimPO family: a reference-free reward on the policy's mean log-probability, with a target margin.

SimPO (Meng, Xia & Chen, 2024), eq. 6:  L = −log σ( β ℓ_w − β ℓ_l − γ ), ℓ = log π(y|x) / |y|.
Its two ablations are switches: `length_normalization: false` (sums s instead of means ℓ) and γ = 0.
AlphaPO (Gupta et al., 2025) reshapes the reward: r = (β/α)(1 − p^(−α)), p = exp ℓ; α → 0 is SimPO.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

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
class MarginObjective(Objective):
    """Shared by SimPO and AlphaPO: β and the margin γ, given as γ/β (reference repository) or absolute."""

    beta: float = field(default=2.0, metadata={"help": "β, scale of the reward (paper grid 2.0-2.5, later 10)."})
    gamma_beta_ratio: float | None = field(default=None, metadata={
        "help": "Target margin as γ/β (reference-repository convention); default 0.25. Exclusive with gamma."})
    gamma: float | None = field(default=None, metadata={
        "help": "Absolute target margin γ (TRL's simpo_gamma). Exclusive with gamma_beta_ratio."})

    default_gamma_beta_ratio = 0.25

    @property
    def effective_gamma(self) -> float:
        """Absolute margin γ, whichever way it was given."""
        if self.gamma is not None:
            return self.gamma
        ratio = self.default_gamma_beta_ratio if self.gamma_beta_ratio is None else self.gamma_beta_ratio
        return self.beta * ratio

    def __post_init__(self) -> None:
        positive("beta", self.beta)
        check(self.gamma is None or self.gamma_beta_ratio is None,
              "both gamma and gamma_beta_ratio are set: give the margin one way only")
        non_negative("target margin γ", self.effective_gamma)

    def hyperparameters(self) -> dict:
        return super().hyperparameters() | {"effective_gamma": self.effective_gamma}


@dataclass
class SimPO(MarginObjective):
    name = "simpo"
    label = "SimPO"
    formula = "−log σ(β ℓ_w − β ℓ_l − γ)"

    loss_type: Literal["sigmoid", "hinge"] = field(default="sigmoid", metadata={
        "help": "sigmoid: −log σ(z); hinge: max(0, 1 − z), z = β Δℓ − γ."})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "Conservative-loss label smoothing in [0, 0.5) (sigmoid loss only)."})
    sft_weight: float = field(default=0.0, metadata={
        "help": "Weight of the token-mean NLL of the chosen responses; 0 disables it."})
    length_normalization: bool = field(default=True, metadata={
        "help": "Reward on the mean log-prob ℓ (SimPO); false: on the sum s (the paper's ablation)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.loss_type in ("sigmoid", "hinge"), f"loss_type = {self.loss_type!r}: choose sigmoid or hinge")
        check(0 <= self.label_smoothing < 0.5, f"label_smoothing = {self.label_smoothing}: must be in [0, 0.5)")
        non_negative("sft_weight", self.sft_weight)
        check(isinstance(self.length_normalization, bool),
              f"length_normalization = {self.length_normalization!r}: must be true or false")

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        if self.length_normalization:
            chosen, rejected = logps.chosen_mean, logps.rejected_mean
        else:
            chosen, rejected = logps.chosen, logps.rejected
        chosen_rewards, rejected_rewards = self.beta * chosen, self.beta * rejected
        z = chosen_rewards - rejected_rewards - self.effective_gamma
        losses = sigmoid_loss(z, self.label_smoothing) if self.loss_type == "sigmoid" else torch.relu(1 - z)
        loss = losses.mean()
        metrics = {"gamma": self.effective_gamma}
        if self.sft_weight > 0:
            nll = logps.chosen_nll()
            loss = loss + self.sft_weight * nll
            metrics["nll"] = nll.detach()
        return ObjectiveOutput(loss, chosen_rewards, rejected_rewards, metrics)


@dataclass
class AlphaPO(MarginObjective):
    name = "alphapo"
    label = "AlphaPO"
    formula = "−log σ(r_w − r_l − γ), r = (β/α)(1 − exp(−α ℓ))"

    alpha: float = field(default=0.25, metadata={
        "help": "α, shape of the reward (Mistral-Instruct: 0.25); α → 0 is SimPO, so 0 is refused."})
    label_smoothing: float = field(default=0.0, metadata={"help": "Conservative-loss label smoothing in [0, 0.5)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check(isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha) and self.alpha != 0,
              f"alpha = {self.alpha!r}: must be a finite non-zero number (α = 0 is SimPO: set objective: simpo)")
        check(0 <= self.label_smoothing < 0.5, f"label_smoothing = {self.label_smoothing}: must be in [0, 0.5)")

    def reward(self, mean_logps: torch.Tensor) -> torch.Tensor:
        # p^(−α) = exp(−α ℓ): computed from ℓ, never from p, so long responses do not underflow
        return self.beta / self.alpha * -torch.expm1(-self.alpha * mean_logps)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        chosen_rewards, rejected_rewards = self.reward(logps.chosen_mean), self.reward(logps.rejected_mean)
        losses = sigmoid_loss(chosen_rewards - rejected_rewards - self.effective_gamma, self.label_smoothing)
        return ObjectiveOutput(losses.mean(), chosen_rewards, rejected_rewards, {"gamma": self.effective_gamma})
