"""`make demo-onpolicy`: the tiny SFT model samples answers, the program judge scores them,
best vs worst become SimPO's pairs; the result sits beside the off-policy demo in one table."""
import json

import pytest
from conftest import run_make

from simpo_demo.task import judge
from simpo_recipes.files import read_jsonl


@pytest.mark.slow
def test_make_demo_onpolicy_sets_onpolicy_simpo_beside_off_policy(repo_copy):
    result = run_make(repo_copy, "demo-onpolicy")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| simpo |" in result.stdout and "| simpo-onpolicy |" in result.stdout
    results = json.loads((repo_copy / "outputs/tiny/eval/results.json").read_text())
    sft, on = results["models"]["sft"], results["models"]["simpo-onpolicy"]
    assert list(results["models"]) == ["sft", "simpo", "simpo-onpolicy"]
    assert on["accuracy"] >= sft["accuracy"] + 0.25 and on["win_rate_vs_baseline"] >= 0.7, (sft, on)
    assert on["alpaca_eval"]["win_rate"] == pytest.approx(100 * on["win_rate_vs_baseline"], abs=1e-6)

    data = repo_copy / "data/demo/onpolicy"
    report = json.loads((data / "report.json").read_text())
    train = report["splits"]["train"]
    assert train["prompts"] == 4000 and train["kept"] + sum(train["dropped"].values()) == 4000
    assert train["dropped"]["all samples identical"] > 0 and train["dropped"]["best and worst scores tie"] > 0
    assert train["margin"]["min"] == train["margin"]["max"] == 1.0  # the program scores 1 (right) or 0
    rows = read_jsonl(data / "train.jsonl")
    assert len(rows) == train["kept"]
    assert all(judge(r, r["chosen"][-1]["content"]) and not judge(r, r["rejected"][-1]["content"]) for r in rows)
    assert (data / "margins.png").stat().st_size > 10_000
    assert "saved final model to outputs/tiny/simpo-onpolicy" in result.stdout + result.stderr
