"""`make table`'s pieces: results.json kept per benchmark, the paper's rows per method from the recipe,
every evaluated method of a setting beside the paper's full Table 4 rows, MT-Bench labelled with its
judge, missing cells marked, the decoding mode and judge of every number listed, PNG readable alone."""
import json
from pathlib import Path

import pytest

from simpo_recipes.evaluation import results
from simpo_recipes.pipeline.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]


def test_update_keeps_other_benchmarks(tmp_path):
    path = tmp_path / "results.json"
    results.update(path, "alpaca_eval", {"win_rate": 12.5, "length_controlled_winrate": None}, name="m", recipe="r")
    results.update(path, "mt_bench", {"score": 6.25, "judge": "gpt-4"}, name="m", recipe="r")
    saved = json.loads(path.read_text())
    assert saved["name"] == "m" and set(saved["benchmarks"]) == {"alpaca_eval", "mt_bench"}
    assert results.ours(saved) == {"AlpacaEval 2 WR": 12.5, "MT-Bench (GPT-4)": 6.25}  # LC not computed: absent


def test_paper_rows_come_from_the_recipe_with_each_mt_bench_judge():
    paper = results.paper_numbers(load_recipe(REPO / "recipes/mistral-base.yaml"))
    assert list(paper) == ["sft", "rrhf", "slic", "dpo", "ipo", "cpo", "kto", "orpo", "rdpo", "simpo", "simpo-no-ln",
                           "simpo-gamma0"]  # Table 4's rows and the ablation, in the paper's order
    assert paper["simpo"] == {"AlpacaEval 2 LC": 21.5, "AlpacaEval 2 WR": 20.8, "Arena-Hard WR": 16.6,
                              "MT-Bench (GPT-4)": 7.3, "MT-Bench (GPT-4 Turbo)": 6.0}
    assert paper["simpo-no-ln"] == {"AlpacaEval 2 LC": 11.9}
    assert results.paper_numbers(load_recipe(REPO / "recipes/llama3-instruct.yaml"))["simpo"]["MT-Bench (GPT-4)"] == 8.0


def test_every_evaluated_method_beside_the_papers_full_rows(tmp_path):
    eval_dir = tmp_path / "eval"
    with pytest.raises(FileNotFoundError, match="make eval"):
        results.write_table(eval_dir, REPO / "recipes")
    results.update(eval_dir / "llama3-base-dpo" / "results.json", "alpaca_eval",
                   {"win_rate": 20.0, "length_controlled_winrate": 21.55, "judge": "gpt-4-1106-preview",
                    "judge_host": "api.openai.com", "decoding_mode": "reference",
                    "decoding": "beam search, width 1, on log-probs at temperature 0.9"},
                   name="llama3-base-dpo", recipe="llama3-base", method="dpo")
    results.update(eval_dir / "llama3-base-simper" / "results.json", "mt_bench", {"score": 5.5, "judge": "judge-x"},
                   name="llama3-base-simper", recipe="llama3-base", method="simper")
    results.update(eval_dir / "other" / "results.json", "arena_hard", {"win_rate": 3.14159}, name="other",
                   recipe="none")
    path, text = results.write_table(eval_dir, REPO / "recipes")
    assert "## llama3-base (Llama-3-Base)" in text
    header = "| method | source | AlpacaEval 2 LC | AlpacaEval 2 WR | Arena-Hard WR | MT-Bench (GPT-4) | MT-Bench (judge-x) |"
    assert header in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "source" not in line]
    llama = rows[:rows.index("| other | ours | — | — | 3.1% | — | — |")]
    assert [line.split(" | ")[0][2:] for line in llama] == [  # the paper's full rows, ours beside the evaluated
        "SFT", "DPO", "DPO", "IPO", "KTO", "ORPO", "R-DPO", "SimPO", "SimPER"]
    assert "| DPO | paper | 18.2% | 15.5% | 15.9% | 7.7 | — |" in text
    assert "| DPO | ours | 21.6% | 20.0% | — | — | — |" in text
    assert "| SimPER | ours | — | — | — | — | 5.5 |" in text  # an MT-Bench number under its own judge
    assert ("- llama3-base dpo, AlpacaEval 2: decoding reference (beam search, width 1, on log-probs at temperature "
            "0.9); judge gpt-4-1106-preview at api.openai.com") in text
    assert "- none simpo, Arena-Hard: decoding not recorded; judge unknown judge" in text
    assert path.read_text() == text
    assert (eval_dir / "table.png").read_bytes()[:4] == b"\x89PNG"


def test_png_has_a_title_a_panel_per_setting_and_metric_and_every_value(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    shown = {}
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, path, **kw: shown.update(
        title=fig._suptitle.get_text(),
        panels=[(ax.get_title(), ax.get_ylabel(), sorted(t.get_text() for t in ax.texts)) for ax in fig.axes
                if ax.get_visible() and ax.axison]))
    settings = [{"recipe": "r", "title": "R", "rows": [
        {"method": "sft", "label": "SFT", "evaluated": False, "ours": {}, "paper": {"AlpacaEval 2 WR": 40.5}},
        {"method": "simpo", "label": "SimPO", "evaluated": True, "ours": {"AlpacaEval 2 WR": 41.25,
                                                                         "MT-Bench (GPT-4)": 8.0}, "paper": {}}]}]
    results.plot(settings, tmp_path / "t.png")
    assert shown["title"] == "Our evaluation beside the SimPO paper's Table 4"
    assert shown["panels"] == [  # LC and Arena-Hard have no number at all: no panel
        ("R: AlpacaEval 2 WR", "win rate (%)", ["40.5", "41.2"]),
        ("R: MT-Bench (GPT-4)", "score (1-10)", ["8.0"])]
