"""`make table`'s pieces: results.json kept per benchmark, paper numbers from the recipe, missing
cells marked, the decoding mode and judge of every number listed, PNG readable on its own."""
import json
from types import SimpleNamespace

import pytest

from simpo_recipes.evaluation import results
from simpo_recipes.pipeline.recipes import PaperResults


def test_update_keeps_other_benchmarks(tmp_path):
    path = tmp_path / "results.json"
    results.update(path, "alpaca_eval", {"win_rate": 12.5, "length_controlled_winrate": None}, name="m", recipe="r")
    results.update(path, "mt_bench", {"score": 6.25}, name="m", recipe="r")
    saved = json.loads(path.read_text())
    assert saved["name"] == "m" and set(saved["benchmarks"]) == {"alpaca_eval", "mt_bench"}
    assert results.ours(saved) == {"AlpacaEval 2 WR": 12.5, "MT-Bench": 6.25}  # LC not computed: absent


def test_paper_numbers_come_from_the_recipe():
    recipe = SimpleNamespace(paper_results=PaperResults(alpaca_eval_lc=44.7, alpaca_eval_wr=40.5, arena_hard_wr=33.8))
    assert results.paper_numbers(recipe) == {"AlpacaEval 2 LC": 44.7, "AlpacaEval 2 WR": 40.5, "Arena-Hard WR": 33.8}
    assert results.paper_numbers(SimpleNamespace(paper_results=None)) == {}


def test_table_marks_missing_cells_and_draws_png(tmp_path):
    eval_dir, recipes_dir = tmp_path / "eval", tmp_path / "recipes"
    with pytest.raises(FileNotFoundError, match="make eval"):
        results.write_table(eval_dir, recipes_dir)
    results.update(eval_dir / "a" / "results.json", "arena_hard", {"win_rate": 3.14159}, name="a", recipe="none")
    results.update(eval_dir / "b" / "results.json", "alpaca_eval",
                   {"win_rate": 20.0, "length_controlled_winrate": 21.55, "judge": "gpt-4-1106-preview",
                    "judge_host": "api.openai.com", "decoding_mode": "reference",
                    "decoding": "beam search, width 1, on log-probs at temperature 0.9"}, name="b", recipe="none")
    path, text = results.write_table(eval_dir, recipes_dir)
    assert "| a | ours | — | — | 3.1% | — |" in text
    assert "| b | ours | 21.6% | 20.0% | — | — |" in text
    assert "| b | paper | — | — | — | — |" in text
    assert ("- b, AlpacaEval 2: decoding reference (beam search, width 1, on log-probs at temperature 0.9); "
            "judge gpt-4-1106-preview at api.openai.com") in text
    assert "- a, Arena-Hard: decoding not recorded; judge unknown judge" in text
    assert path.read_text() == text
    assert (eval_dir / "table.png").read_bytes()[:4] == b"\x89PNG"


def test_png_has_a_title_values_and_marks_missing_numbers(tmp_path, monkeypatch):
    """No panel without a number; every bar's value written on it; missing ones labelled."""
    import matplotlib.pyplot as plt

    shown = {}
    monkeypatch.setattr(plt.Figure, "savefig", lambda fig, path, **kw: shown.update(
        title=fig._suptitle.get_text(), panels=[(ax.get_title(), ax.get_ylabel(), sorted(t.get_text() for t in ax.texts))
                                                for ax in fig.axes]))
    rows = [{"name": "tiny", "ours": {"AlpacaEval 2 WR": 41.25}, "paper": {}},
            {"name": "llama3-instruct", "ours": {}, "paper": {"AlpacaEval 2 WR": 40.5, "MT-Bench": 8.0}}]
    results.plot(rows, tmp_path / "t.png")
    assert shown["title"] == "Our evaluation beside the SimPO paper's numbers"
    assert shown["panels"] == [  # LC and Arena-Hard have no number at all: no panel
        ("AlpacaEval 2 WR", "win rate (%)", ["40.5%", "41.2%", "missing", "missing"]),
        ("MT-Bench", "score (1-10)", ["8.0", "missing", "missing", "missing"])]
