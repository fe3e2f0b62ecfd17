"""The interface every preference objective implements.

An objective sees per-sequence response log-prob sums and token counts — of the policy, and of the
reference model where it needs one — never logits or batches, so every objective runs on the
same fast step (chunked head, packing, prefix sharing) and the same cached or live reference.
Notation (PAPER.md): s = Σ log π(y|x) over response tokens, |y| its token count, ℓ = s/|y|.

NLL terms (CPO, ORPO, RRHF, SLiC-HF, SimPO's sft_weight) are the token-mean NLL of the chosen
responses, pooled over the micro-batch's chosen tokens — TRL's convention. The paper writes them as
−λ·s_w (a sum), which at UltraFeedback's response lengths (hundreds of tokens) would outweigh the
preference term by two orders of magnitude.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from simpo_recipes.errors import ConfigError


@dataclass
class PairLogps:
    """One micro-batch of B pairs as an objective sees it; every tensor is [B] unless noted."""

    chosen: torch.Tensor
    """s_w = Σ log π_θ(y_w|x)."""
    rejected: torch.Tensor
    """s_l = Σ log π_θ(y_l|x)."""
    chosen_tokens: torch.Tensor
    """|y_w| (float)."""
    rejected_tokens: torch.Tensor
    """|y_l| (float)."""
    ref_chosen: torch.Tensor | None = None
    """Σ log π_ref(y_w|x), for objectives that need a reference."""
    ref_rejected: torch.Tensor | None = None
    """Σ log π_ref(y_l|x)."""
    kl_logratios: torch.Tensor | None = None
    """KTO: log π_θ − log π_ref summed over each mismatched (prompt, other pair's response) sequence, [2B], no grad."""

    @property
    def chosen_mean(self) -> torch.Tensor:
        """ℓ_w = s_w / |y_w|."""
        return self.chosen / self.chosen_tokens.clamp(min=1)

    @property
    def rejected_mean(self) -> torch.Tensor:
        return self.rejected / self.rejected_tokens.clamp(min=1)

    @property
    def chosen_logratios(self) -> torch.Tensor:
        """log π_θ(y_w|x) − log π_ref(y_w|x)."""
        return self.chosen - self.ref_chosen

    @property
    def rejected_logratios(self) -> torch.Tensor:
        return self.rejected - self.ref_rejected

    def chosen_nll(self) -> torch.Tensor:
        """Token-mean NLL of the chosen responses, pooled over the micro-batch (scalar)."""
        return -self.chosen.sum() / self.chosen_tokens.sum().clamp(min=1)


@dataclass
class ObjectiveOutput:
    """What an objective returns for one micro-batch."""

    loss: torch.Tensor
    """Scalar: the mean of the per-pair losses plus any NLL term; what backward sees."""
    chosen_rewards: torch.Tensor
    """[B] the objective's own reward of each chosen response (what its loss ranks)."""
    rejected_rewards: torch.Tensor
    """[B] the same for the rejected responses."""
    metrics: dict[str, torch.Tensor | float] = dataclasses.field(default_factory=dict)
    """Objective-specific values to log (scalars or [B]); averaged per pair like the rest."""


def sigmoid_loss(z: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """−log σ(z), with label smoothing ε the 'conservative' form: the label is flipped with probability ε."""
    return -torch.nn.functional.logsigmoid(z) * (1 - label_smoothing) - torch.nn.functional.logsigmoid(-z) * label_smoothing


def check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def positive(name: str, value) -> None:
    check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0,
          f"{name} = {value!r}: must be a finite number > 0")


def non_negative(name: str, value) -> None:
    check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0,
          f"{name} = {value!r}: must be a finite number ≥ 0")


@dataclass
class Objective:
    """Base of every objective: a dataclass of its hyperparameters (the config keys it accepts, each
    documented) with the loss. Subclasses set `name`, the flags below, and `__call__`."""

    name: ClassVar[str]
    """The config value `objective: <name>`."""
    label: ClassVar[str]
    """How the paper's tables name it."""
    formula: ClassVar[str]
    """Loss per pair, for the README and `make plan`."""
    needs_reference: ClassVar[bool] = False
    """Whether it reads π_ref (cached pass or live model)."""
    needs_kl_sequences: ClassVar[bool] = False
    """Whether it needs mismatched (prompt, response) sequences (KTO's KL reference point)."""

    # Set by the trainer: the mean over every process of a scalar (identity on one process).
    mean_across_processes: ClassVar[Callable[[torch.Tensor], torch.Tensor]] = staticmethod(lambda t: t)

    def __call__(self, logps: PairLogps) -> ObjectiveOutput:
        raise NotImplementedError

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def hyperparameters(self) -> dict:
        """The resolved hyperparameters, for logs, `make plan` and model cards."""
        return dataclasses.asdict(self)
