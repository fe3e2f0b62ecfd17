"""`make paper`: the length-controlled pairs it trains on, its tuning rule and statistics, and a shrunken run
end to end (two methods, two γ values) whose document and figures must come from that run's own numbers."""
import json
import random

import pytest
from conftest import run_make

from simpo_demo.task import expected_answer, judge, length_controlled_rejected, parse_prompt, write_demo_data
from simpo_paper.measure import spearman
from simpo_paper.pipeline import choose
from simpo_recipes.files import read_jsonl


def _pairs(folder, share):
    paths = write_demo_data(folder, n_sft=20, n_prefs=600, n_heldout=10, n_test=10, longer_chosen_share=share)
    rows = read_jsonl(paths["prefs_train"])
    return paths, [(judge(r, r["rejected"][-1]["content"]), judge(r, r["chosen"][-1]["content"]),
                    len(r["chosen"][-1]["content"].split()), len(r["rejected"][-1]["content"].split()),
                    r["prompt"]) for r in rows]


def test_longer_chosen_share_sets_which_answer_is_longer_and_leaves_the_other_splits_alone(tmp_path):
    demo = write_demo_data(tmp_path / "demo", n_sft=20, n_prefs=600, n_heldout=10, n_test=10)
    shares = {}
    for share in (0.0, 0.5, 1.0):
        paths, pairs = _pairs(tmp_path / str(share), share)
        assert all(chosen_right and not rejected_right for rejected_right, chosen_right, *_ in pairs)
        for split in ("heldout", "sft_train", "sft_test"):  # what the demo's SFT model and test prompts are
            assert paths[split].read_bytes() == demo[split].read_bytes(), split
        not_max = [(w, lo) for _, _, w, lo, prompt in pairs if parse_prompt(prompt)["task"] != "max"]
        shares[share] = sum(w > lo for w, lo in not_max) / len(not_max)
        assert all(w != lo for w, lo in not_max)  # a sort or reverse pair always differs in length
    assert shares[0.0] == 0 and shares[1.0] == 1 and 0.4 < shares[0.5] < 0.6, shares
    with pytest.raises(ValueError, match="longer_chosen_share"):
        write_demo_data(tmp_path / "bad", n_sft=1, n_prefs=1, n_heldout=1, n_test=1, longer_chosen_share=1.5)


def test_spearman_ranks_with_ties_and_is_undefined_for_a_constant():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1)
    # ranks (1.5, 1.5, 3) and (1, 2, 3): r = 1.5 / sqrt(1.5 * 2)
    assert spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(1.5 / (1.5 * 2) ** 0.5)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_the_tuning_rule_keeps_the_best_validation_accuracy_and_the_smaller_rate_on_a_tie():
    def record(lr, accuracy):
        return {"learning_rate": lr, "validation": {"accuracy": accuracy}}

    assert choose([record(1e-4, 0.5), record(3e-4, 0.7), record(1e-3, 0.6)])["learning_rate"] == 3e-4
    assert choose([record(3e-4, 0.7), record(1e-4, 0.7)])["learning_rate"] == 1e-4


def test_the_rejected_answers_are_right_answers_changed_by_one_digit_or_chatter():
    rng = random.Random(0)
    assert length_controlled_rejected("reverse", [1, 2, 3], rng, longer_chosen=False) == "3 2 1 Done."
    assert length_controlled_rejected("sort", [3, 1, 3], rng, longer_chosen=True) == "1 3"  # the dropped duplicate
    shorter = length_controlled_rejected("reverse", [1, 2, 3], rng, longer_chosen=True).split()
    assert len(shorter) == 2 and all(d in expected_answer("reverse", [1, 2, 3]).split() for d in shorter)
    assert length_controlled_rejected("max", [1, 9], rng, longer_chosen=True) == "9 Hope this helps!"


SMALL = ("--methods simpo dpo --gamma_beta_ratios 0 0.5 --learning_rates 1e-4 3e-4 --n_prefs 256 --n_validation 30 "
         "--n_test 40 --efficiency_steps 4 --efficiency_rounds 2 --sft_max_steps 60")


@pytest.mark.slow
def test_a_shrunken_make_paper_writes_the_document_and_figures_from_its_own_numbers(repo_copy):
    result = run_make(repo_copy, "paper", f"PAPER_ARGS={SMALL}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((repo_copy / "outputs/paper/results.json").read_text())
    doc = (repo_copy / "docs/paper_reproduction.md").read_text()
    models = results["test"]["models"]
    assert set(models) == {"sft", "simpo", "dpo", "simpo-gbr0"} and results["test"]["n_prompts"] == 40
    assert "[paper] run 5/5" in result.stdout and "[paper] simpo: learning rate" in result.stdout  # progress per model

    # the rule, applied to the run's own records, chose what the table shows
    for method in ("simpo", "dpo"):
        records = [r for r in results["runs"].values() if r["method"] == method and r["gamma_beta_ratio"] is None]
        assert len(records) == 2 and results["tuned"][method] == choose(records)
    def rows(section: str) -> dict[str, str]:
        """The table rows of a section of the document, by their first cell."""
        text = doc.split(f"## {section}")[1].split("\n## ")[0]
        return {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}

    table4, claims = rows("Table 4 in miniature"), rows("The claims")
    for name, label in (("sft", "SFT"), ("simpo", "SimPO"), ("dpo", "DPO")):
        m = models[name]
        for number in (f"{m['accuracy']:.1%}", f"{m['mean_length']:.2f}"):
            assert number in table4[label], (label, number, table4[label])
        if name != "sft":
            assert f"{results['tuned'][name]['learning_rate']:g}" in table4[label]
            # the alpaca_eval hand-off, judged by the program on loopback, agrees with the program
            assert m["alpaca_eval"]["win_rate"] == pytest.approx(100 * m["win_rate_vs_baseline"], abs=1e-6)
            assert f"{m['alpaca_eval']['win_rate']:.1f}%" in table4[label]
    ahead = models["simpo"]["win_rate_vs_baseline"] > models["dpo"]["win_rate_vs_baseline"]
    claim = claims["SimPO is ahead of every baseline on win rate"]
    assert ("**not reproduced**" in claim) == (not ahead), claim
    rho = results["length_logprob"]["simpo"]["spearman"]
    assert len(results["length_logprob"]["simpo"]["lengths"]) == 40 and f"{rho:.2f}" in table4["SimPO"]
    for png in ("table4", "gamma", "length_logprob", "efficiency"):
        assert f"(paper/{png}.png)" in doc
        assert (repo_copy / f"docs/paper/{png}.png").stat().st_size > 10_000, png
    assert set(results["efficiency"]) == {"SimPO", "DPO (live reference)", "DPO (cached reference)"}
    assert all(r["steps"] == 4 and r["rounds"] == 2 for r in results["efficiency"].values())
    cost = rows("Cost: SimPO against DPO")["SimPO"]
    assert f"{1000 * results['efficiency']['SimPO']['cpu_step_s']:.1f}" in cost

    # a rerun trains nothing again and writes the same numbers (deterministic for the seed)
    again = run_make(repo_copy, "paper", f"PAPER_ARGS={SMALL}")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("(finished earlier)") == 5 and "skipping it" in again.stdout
    rerun = json.loads((repo_copy / "outputs/paper/results.json").read_text())

    def numbers(run: dict) -> dict:
        """All but the wall time and the loopback judge's port (a free one is taken each time)."""
        for m in run["test"]["models"].values():
            m.get("alpaca_eval", {}).pop("judge_host", None)
        return {k: v for k, v in run.items() if k != "wall_seconds"}

    assert numbers(rerun) == numbers(results)
