"""Every objective against a hand computation on fixed numbers, and against a plain per-sequence
reference (one forward per sequence, the formula written out per pair) through the trainer's fast
step: loss and every gradient. Also the per-pair weighting of metrics and each objective's config checks."""
import math

import pytest
import torch
from datasets import Dataset
from preference_cases import pairs, perturbed, step, tiny_llama, trainer_for

from simpo_recipes.config.parsing import build, stage_config
from simpo_recipes.errors import ConfigError
from simpo_recipes.objectives import OBJECTIVES, PairLogps

# Two pairs: s_w, s_l (sums), |y_w|, |y_l|, the reference sums, and KTO's mismatched log-ratios.
S_W, S_L, N_W, N_L = [-4.0, -9.0], [-6.0, -3.0], [2.0, 3.0], [3.0, 1.0]
R_W, R_L, KL = [-5.0, -8.0], [-5.5, -4.0], [0.3, -0.1, 0.2, 0.4]


def fixed() -> PairLogps:
    t = torch.tensor
    return PairLogps(t(S_W), t(S_L), t(N_W), t(N_L), ref_chosen=t(R_W), ref_rejected=t(R_L), kl_logratios=t(KL))


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def per_pair(fn) -> list[float]:
    """fn(s_w, s_l, n_w, n_l, ref_w, ref_l) for each pair."""
    return [fn(*args) for args in zip(S_W, S_L, N_W, N_L, R_W, R_L)]


NLL = -sum(S_W) / sum(N_W)  # token-mean NLL of the chosen responses, pooled over the batch
KL_HAT = max(0.0, sum(KL) / len(KL))
HAND = {  # objective, hyperparameters -> the loss written out by hand
    ("simpo", (("beta", 2.5), ("gamma", 1.375))):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: -logsig(2.5 * sw / nw - 2.5 * sl / nl - 1.375))) / 2,
    ("simpo", (("beta", 2.0), ("gamma_beta_ratio", 0.5), ("label_smoothing", 0.1), ("sft_weight", 0.3))):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: -0.9 * logsig(2 * sw / nw - 2 * sl / nl - 1.0)
                     - 0.1 * logsig(-(2 * sw / nw - 2 * sl / nl - 1.0)))) / 2 + 0.3 * NLL,
    ("simpo", (("beta", 2.0), ("gamma", 0.5), ("loss_type", "hinge"))):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: max(0.0, 1 - (2 * sw / nw - 2 * sl / nl - 0.5)))) / 2,
    ("simpo", (("beta", 2.0), ("gamma", 0.5), ("length_normalization", False))):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: -logsig(2 * sw - 2 * sl - 0.5))) / 2,
    ("dpo", (("beta", 0.1),)):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: -logsig(0.1 * ((sw - rw) - (sl - rl))))) / 2,
    ("ipo", (("tau", 0.5),)):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: ((sw - rw) / nw - (sl - rl) / nl - 1 / (2 * 0.5)) ** 2)) / 2,
    ("lndpo", (("beta", 5.0),)):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: -logsig(5 * ((sw - rw) / nw - (sl - rl) / nl)))) / 2,
    ("rdpo", (("beta", 0.1), ("alpha", 0.05))):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: -logsig(0.1 * ((sw - rw) - (sl - rl)) + 0.05 * (nw - nl)))) / 2,
    ("kto", (("beta", 0.1), ("desirable_weight", 1.0), ("undesirable_weight", 1.5))):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: (1 - sig(0.1 * (sw - rw) - 0.1 * KL_HAT)
                                                     + 1.5 * (1 - sig(0.1 * KL_HAT - 0.1 * (sl - rl)))) / 2)) / 2,
    ("cpo", (("beta", 0.1), ("sft_weight", 1.0))):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: -logsig(0.1 * sw - 0.1 * sl))) / 2 + NLL,
    ("orpo", (("odds_ratio_weight", 2.0),)):
        NLL - 2.0 * sum(per_pair(lambda sw, sl, nw, nl, rw, rl: logsig(
            (sw / nw - math.log(1 - math.exp(sw / nw))) - (sl / nl - math.log(1 - math.exp(sl / nl)))))) / 2,
    ("rrhf", (("sft_weight", 0.5),)):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: max(0.0, sl / nl - sw / nw))) / 2 + 0.5 * NLL,
    ("slic", (("delta", 2.0), ("sft_weight", 0.1))):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: max(0.0, 2.0 - sw + sl))) / 2 + 0.1 * NLL,
    ("alphapo", (("alpha", 0.25), ("beta", 2.5), ("gamma", 0.1))):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: -logsig(
            2.5 / 0.25 * (1 - math.exp(sw / nw) ** -0.25) - 2.5 / 0.25 * (1 - math.exp(sl / nl) ** -0.25) - 0.1))) / 2,
    ("simper", ()):
        sum(per_pair(lambda sw, sl, nw, nl, rw, rl: -math.exp(sw / nw) + math.exp(sl / nl))) / 2,
}


@pytest.mark.parametrize("name, hyperparameters", list(HAND), ids=[f"{n}{dict(h)}" for n, h in HAND])
def test_loss_equals_the_hand_computation(name, hyperparameters):
    output = OBJECTIVES[name](**dict(hyperparameters))(fixed())
    assert output.loss.item() == pytest.approx(HAND[name, hyperparameters], rel=1e-6)
    assert output.chosen_rewards.shape == output.rejected_rewards.shape == (2,)


def test_every_objective_has_a_hand_computation():
    assert {name for name, _ in HAND} == set(OBJECTIVES)


def test_rewards_are_what_each_loss_ranks():
    logps = fixed()
    simpo = OBJECTIVES["simpo"](beta=2.5)(logps)
    assert simpo.chosen_rewards.tolist() == pytest.approx([2.5 * s / n for s, n in zip(S_W, N_W)])
    dpo = OBJECTIVES["dpo"](beta=0.1)(logps)
    assert dpo.rejected_rewards.tolist() == pytest.approx([0.1 * (s - r) for s, r in zip(S_L, R_L)])
    rdpo = OBJECTIVES["rdpo"](beta=0.1, alpha=0.05)(logps)  # the length term is part of R-DPO's reward
    assert rdpo.chosen_rewards.tolist() == pytest.approx([0.1 * (s - r) + 0.05 * n for s, r, n in zip(S_W, R_W, N_W)])
    assert OBJECTIVES["kto"]()(logps).metrics["kl"].item() == pytest.approx(KL_HAT)
    assert OBJECTIVES["simper"]()(logps).chosen_rewards.tolist() == pytest.approx([math.exp(s / n) for s, n in
                                                                                   zip(S_W, N_W)])


def test_kto_reference_point_is_never_negative_and_never_differentiated():
    logps = fixed()
    logps.kl_logratios = torch.tensor([-3.0, -1.0, -2.0, -2.0], requires_grad=True)
    output = OBJECTIVES["kto"](beta=0.1)(logps)
    assert output.metrics["kl"].item() == 0.0
    assert not output.metrics["kl"].requires_grad


# --- a plain per-sequence reference: one forward per sequence, the formulas per pair, written anew --------------

def sequence_logp(model, prompt: list[int], response: list[int]) -> torch.Tensor:
    logits = model(input_ids=torch.tensor([prompt + response])).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
    return logprobs.gather(-1, torch.tensor(response)[:, None]).sum()


def plain_loss(name: str, hp: dict, model, ref_model, rows) -> torch.Tensor:
    losses, nll_sum, nll_tokens, kl = [], 0.0, 0, []
    with torch.no_grad():
        refs = [(sequence_logp(ref_model, r["prompt_input_ids"], r["chosen_input_ids"]),
                 sequence_logp(ref_model, r["prompt_input_ids"], r["rejected_input_ids"])) for r in rows]
        for r in rows:
            for side in ("kl_chosen_input_ids", "kl_rejected_input_ids"):
                kl.append(sequence_logp(model, r["prompt_input_ids"], r[side])
                          - sequence_logp(ref_model, r["prompt_input_ids"], r[side]))
    kl_hat = torch.stack(kl).mean().clamp(min=0)
    for row, (ref_w, ref_l) in zip(rows, refs):
        s_w = sequence_logp(model, row["prompt_input_ids"], row["chosen_input_ids"])
        s_l = sequence_logp(model, row["prompt_input_ids"], row["rejected_input_ids"])
        n_w, n_l = len(row["chosen_input_ids"]), len(row["rejected_input_ids"])
        nll_sum, nll_tokens = nll_sum - s_w, nll_tokens + n_w
        h = (s_w - ref_w) - (s_l - ref_l)
        losses.append({
            "rdpo": lambda: -torch.nn.functional.logsigmoid(hp["beta"] * h + hp["alpha"] * (n_w - n_l)),
            "rrhf": lambda: torch.relu(s_l / n_l - s_w / n_w),
            "slic": lambda: torch.relu(hp["delta"] - s_w + s_l),
            "simper": lambda: torch.exp(s_l / n_l) - torch.exp(s_w / n_w),
            "kto": lambda: ((1 - torch.sigmoid(hp["beta"] * (s_w - ref_w - kl_hat)))
                            + (1 - torch.sigmoid(hp["beta"] * (kl_hat - (s_l - ref_l))))) / 2,
        }[name]())
    loss = torch.stack(losses).mean()
    return loss + hp.get("sft_weight", 0.0) * nll_sum / nll_tokens


PLAIN = {"rdpo": {"beta": 0.1, "alpha": 0.05}, "rrhf": {"sft_weight": 0.5}, "slic": {"delta": 2.0, "sft_weight": 0.1},
         "simper": {}, "kto": {"beta": 0.5}}


@pytest.mark.parametrize("name", PLAIN)
def test_objectives_without_a_trl_oracle_equal_a_per_sequence_reference(name, tmp_path):
    """R-DPO, RRHF, SLiC-HF and SimPER have no TRL implementation (KTO's paired form is checked here too)."""
    reference = tiny_llama()
    policy = perturbed(reference)
    rows = pairs()
    needs_reference = OBJECTIVES[name].needs_reference
    loss, grads, _, _ = step(policy, name, tmp_path, rows=rows, objective_args=PLAIN[name],
                             ref_model=reference if needs_reference else None)
    model = perturbed(reference)
    expected = plain_loss(name, PLAIN[name], model, reference, rows)
    expected.backward()
    assert loss == pytest.approx(expected.item(), abs=1e-5)
    for parameter_name, parameter in model.named_parameters():
        torch.testing.assert_close(grads[parameter_name], parameter.grad, atol=1e-5, rtol=1e-4, msg=parameter_name)


# --- metrics: a mean over pairs -----------------------------------------------------------------------------------

def test_eval_metrics_are_averaged_per_pair_not_per_batch(tmp_path):
    """5 eval pairs in batches of 2 + 2 + 1, the last one mis-ranked: accuracy 0.8, not (1 + 1 + 0) / 3."""
    model = tiny_llama()
    trainer = trainer_for(model, "simpo", tmp_path)

    def ranked_right(row) -> bool:
        trainer.compute_loss(model, trainer.data_collator([row]))
        return trainer._metrics["train"].pop()["rewards/accuracies"] == 1.0

    rows = []
    for i, row in enumerate(pairs(lengths=[(3, 2, 3)] * 5, kl=False, seed=7)):
        if ranked_right(row) != (i < 4):  # swap responses so that exactly the last pair is mis-ranked
            row["chosen_input_ids"], row["rejected_input_ids"] = row["rejected_input_ids"], row["chosen_input_ids"]
        rows.append(row)
    model.eval()
    losses = [trainer.compute_loss(model, trainer.data_collator([row])).item() for row in rows]
    trainer._metrics["eval"].pop()
    trainer.eval_dataset = Dataset.from_list(rows)
    metrics = trainer.evaluate()  # per_device_eval_batch_size 2
    assert metrics["eval_rewards/accuracies"] == pytest.approx(0.8)
    assert metrics["eval_loss"] == pytest.approx(sum(losses) / 5, rel=1e-5)  # the loss too is weighted per pair


# --- configuration: each objective checks its own keys --------------------------------------------------------------

BASE = {"model_name_or_path": "m", "dataset_mixer": {"d": 1.0}, "output_dir": "o", "use_cpu": True}


def preference(file_config: dict, overrides: dict | None = None):
    return stage_config("preference", BASE | file_config, overrides or {}, "test.yaml")


def test_a_key_of_another_objective_is_an_error_that_names_its_owner():
    with pytest.raises(ConfigError, match=r"test.yaml: 'tau' is a hyperparameter of ipo, not of objective 'simpo'"):
        preference({"beta": 2.0, "tau": 0.1})
    with pytest.raises(ConfigError, match="'gamma_beta_ratio' is a hyperparameter of simpo, alphapo, not of objective 'dpo'"):
        preference({"objective": "dpo", "gamma_beta_ratio": 0.5})
    with pytest.raises(ConfigError, match="unknown key 'betta'; did you mean 'beta'"):
        preference({"betta": 2.0})


@pytest.mark.parametrize("config, message", [
    ({"objective": "dop"}, "objective = 'dop': choose one of"),
    ({"objective": "dpo", "beta": 0}, "beta = 0.0: must be a finite number > 0"),
    ({"objective": "ipo", "tau": -1}, "tau = -1.0"),
    ({"objective": "alphapo", "alpha": 0}, "α = 0 is SimPO: set objective: simpo"),
    ({"objective": "kto", "desirable_weight": 0}, "desirable_weight = 0"),
    ({"objective": "slic", "delta": -1.0}, "delta = -1.0"),
    ({"beta": 2.0, "gamma": 1.0, "gamma_beta_ratio": 0.5}, "both gamma and gamma_beta_ratio"),
    ({"loss_type": "ipo"}, "loss_type = 'ipo': choose sigmoid or hinge"),
    ({"reference_logps": "maybe"}, "reference_logps = 'maybe': choose cached or live"),
])
def test_objective_hyperparameters_are_checked(config, message):
    with pytest.raises(ConfigError, match=message):
        preference(config)


def test_an_objective_chosen_on_the_command_line_drops_the_file_objectives_keys(caplog):
    *_, objective = preference({"beta": 2.5, "gamma_beta_ratio": 0.55, "loss_type": "sigmoid"},
                               {"objective": "dpo", "beta": 0.01})
    assert objective.name == "dpo" and objective.beta == 0.01
    assert "the file's simpo hyperparameters gamma_beta_ratio, loss_type are not used" in caplog.text
    # beta not given again: the file's SimPO β is not silently read as DPO's
    assert preference({"beta": 2.5}, {"objective": "dpo"})[-1].beta == OBJECTIVES["dpo"]().beta


def test_simpo_keys_of_the_reference_repository_keep_working():
    *_, objective = preference({"beta": 2.5, "gamma_beta_ratio": 0.55, "loss_type": "sigmoid",
                                "label_smoothing": 0.0, "sft_weight": 0.0})
    assert objective.name == "simpo" and objective.effective_gamma == pytest.approx(1.375)


def test_objective_classes_parse_alone():
    [dpo] = build({"beta": 0.05}, (OBJECTIVES["dpo"],), "x.yaml")
    assert dpo.hyperparameters() == {"beta": 0.05, "label_smoothing": 0.0}
