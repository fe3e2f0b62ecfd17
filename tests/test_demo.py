"""`make demo`, the README's main command, end to end on a copy of the repository."""
import json

import pytest
from conftest import run_make


@pytest.mark.slow
def test_make_demo_shows_simpo_ahead_of_sft(repo_copy):
    result = run_make(repo_copy, "demo")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| simpo |" in result.stdout and "win rate vs sft" in result.stdout
    results = json.loads((repo_copy / "outputs/tiny/eval/results.json").read_text())
    sft, simpo = results["models"]["sft"], results["models"]["simpo"]
    assert simpo["accuracy"] >= sft["accuracy"] + 0.25, (sft, simpo)
    assert simpo["win_rate_vs_baseline"] >= 0.7
    # the same comparison through the AlpacaEval hand-off: alpaca_eval's own win rate, judged by the
    # program served on loopback, equals the program's
    handoff = simpo["alpaca_eval"]
    assert handoff["win_rate"] == pytest.approx(100 * simpo["win_rate_vs_baseline"], abs=1e-6)
    assert handoff["n_total"] == results["n_prompts"] and handoff["length_controlled_winrate"] is None
    assert "alpaca_eval win rate vs sft" in result.stdout and "length-controlled win rate not computed" in result.stdout
    for png in ("outputs/tiny/eval/results.png", "outputs/tiny/sft/training_curves.png",
                "outputs/tiny/simpo/training_curves.png"):
        assert (repo_copy / png).stat().st_size > 10_000, png
