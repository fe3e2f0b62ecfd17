"""The SimPO objective (Meng, Xia & Chen, 2024), eq. 6:

    L = −log σ( β/|y_w| · log π(y_w|x) − β/|y_l| · log π(y_l|x) − γ )

No reference model: the reward is the policy's length-normalised (average) log-probability.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def simpo_loss(
    chosen_avg_logps: torch.Tensor,
    rejected_avg_logps: torch.Tensor,
    beta: float,
    gamma: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-pair losses from average response log-probs; `gamma` is the absolute margin."""
    z = beta * (chosen_avg_logps - rejected_avg_logps) - gamma
    if loss_type == "sigmoid":
        # label smoothing = the "conservative" loss: the label is flipped with that probability
        return -F.logsigmoid(z) * (1 - label_smoothing) - F.logsigmoid(-z) * label_smoothing
    if loss_type == "hinge":
        return torch.relu(1 - z)
    raise ValueError(f"unknown loss_type {loss_type!r}: choose sigmoid or hinge")
