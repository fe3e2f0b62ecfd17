"""The SimPO loss against hand computation, and the log-prob path against a plain one."""
import math

import pytest
import torch

from simpo_recipes.objectives.simpo import simpo_loss
from simpo_recipes.training.logps import response_logps


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_sigmoid_loss_matches_hand_computation():
    chosen, rejected = torch.tensor([-1.0, -2.0, -0.5]), torch.tensor([-1.5, -1.0, -3.0])
    beta, gamma = 2.5, 1.375  # llama3-instruct: gamma_beta_ratio 0.55 × beta 2.5
    expected = [-_log_sigmoid(beta * (w - r) - gamma) for w, r in zip(chosen.tolist(), rejected.tolist())]
    assert simpo_loss(chosen, rejected, beta, gamma).tolist() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_and_hinge_match_hand_computation():
    chosen, rejected = torch.tensor([-1.0]), torch.tensor([-1.2])
    z = 2.0 * 0.2 - 0.5
    smoothed = simpo_loss(chosen, rejected, 2.0, 0.5, label_smoothing=0.1).item()
    assert smoothed == pytest.approx(-0.9 * _log_sigmoid(z) - 0.1 * _log_sigmoid(-z), rel=1e-6)
    assert simpo_loss(chosen, rejected, 2.0, 0.5, loss_type="hinge").item() == pytest.approx(max(0.0, 1 - z))
    with pytest.raises(ValueError, match="loss_type"):
        simpo_loss(chosen, rejected, 2.0, 0.5, loss_type="ipo")


def test_margin_shifts_the_decision_point():
    # equal average log-probs: with gamma the loss is above log 2, without it exactly log 2
    same = torch.tensor([-1.0])
    assert simpo_loss(same, same, 2.0, 0.0).item() == pytest.approx(math.log(2))
    assert simpo_loss(same, same, 2.0, 1.0).item() > math.log(2) + 0.3


def test_response_logps_matches_explicit_log_softmax():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 11, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 7))
    labels[:, :3] = -100  # prompt
    labels[1, 5:] = -100  # padding
    total, count = response_logps(logits, labels)
    log_probs = torch.log_softmax(logits, -1)
    for i in range(3):
        positions = [t for t in range(1, 7) if labels[i, t] != -100]
        assert count[i].item() == len(positions)
        expected = sum(log_probs[i, t - 1, labels[i, t]].item() for t in positions)
        assert total[i].item() == pytest.approx(expected, abs=1e-5)
