"""The demo task generator (data schema, error modes, judge) and the demo evaluation arithmetic."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from simpo_demo import evaluate as demo_eval
from simpo_demo.task import expected_answer, judge, parse_prompt, write_demo_data
from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.evaluation.generation import GenerationSettings

SIZES = {"n_sft": 1500, "n_prefs": 1500, "n_heldout": 200, "n_test": 100}


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list[dict]]:
    paths = write_demo_data(tmp_path_factory.mktemp("demo"), seed=42, **SIZES)
    return {name: read(path) for name, path in paths.items()}


def answer(messages: list[dict]) -> str:
    return messages[1]["content"]


def test_deterministic_for_a_seed(tmp_path, data):
    a = write_demo_data(tmp_path / "a", seed=42, **SIZES)
    b = write_demo_data(tmp_path / "b", seed=42, **SIZES)
    c = write_demo_data(tmp_path / "c", seed=7, **SIZES)
    assert set(a) == {"sft_train", "sft_test", "prefs_train", "prefs_test", "heldout"}
    assert a["sft_train"] == tmp_path / "a" / "sft" / "train.jsonl"
    assert a["prefs_test"] == tmp_path / "a" / "prefs" / "test.jsonl"
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes()
        assert a[name].read_bytes() != c[name].read_bytes()
    assert [len(data[k]) for k in ("sft_train", "sft_test", "prefs_train", "prefs_test", "heldout")] == [
        1500, 100, 1500, 100, 200]


def test_schemas(data):
    for row in data["sft_train"] + data["sft_test"]:
        assert set(row) == {"prompt", "prompt_id", "messages"}
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"] == row["prompt"]
    for row in data["prefs_train"] + data["prefs_test"]:
        assert set(row) == {"prompt", "prompt_id", "chosen", "rejected", "score_chosen", "score_rejected"}
        for key in ("chosen", "rejected"):
            assert [m["role"] for m in row[key]] == ["user", "assistant"]
            assert row[key][0]["content"] == row["prompt"]
        assert isinstance(row["score_chosen"], float) and row["score_chosen"] > row["score_rejected"]
        assert answer(row["chosen"]) != answer(row["rejected"])
    for row in data["heldout"]:
        assert {"prompt_id", "instruction", "task", "items", "answer"} <= set(row)
        assert parse_prompt(row["instruction"]) == {"task": row["task"], "items": row["items"]}


def test_prompts_disjoint_and_short(data):
    prompts = {name: [r.get("prompt") or r["instruction"] for r in rows] for name, rows in data.items()}
    everything = [p for rows in prompts.values() for p in rows]
    assert len(everything) == len(set(everything))
    ids = [r["prompt_id"] for rows in data.values() for r in rows]
    assert len(ids) == len(set(ids))
    assert max(len(p.split()) for p in everything) <= 16
    assert max(len(answer(r["rejected"]).split()) for r in data["prefs_train"]) <= 12


def test_rejected_both_longer_and_shorter(data):
    diffs = [len(answer(r["rejected"])) - len(answer(r["chosen"])) for r in data["prefs_train"]]
    longer, shorter = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    assert longer > 0.5 * len(diffs)
    assert shorter > 0.08 * len(diffs)


def test_judge_accepts_chosen_rejects_rejected(data):
    for row in data["prefs_train"]:
        assert judge(row, answer(row["chosen"]))
        assert judge(row, "  " + answer(row["chosen"]) + "\n")
        assert not judge(row, answer(row["rejected"]))
    for row in data["heldout"]:
        assert judge(row, row["answer"]) and not judge(row, row["answer"] + " 1")
    record = {"task": "sort", "items": [3, 1, 3]}
    assert judge(record, "1 3 3") and not judge(record, "1 3") and not judge(record, "1  3 3")
    assert expected_answer("max", [3, 9, 2]) == "9" and expected_answer("reverse", [1, 2, 3]) == "3 2 1"
    with pytest.raises(ValueError):
        judge({"prompt": "Tell me a story"}, "no")


def test_sft_error_fraction(data):
    rows = data["sft_train"]
    wrong = [r for r in rows if not judge(r, answer(r["messages"]))]
    assert 0.45 <= len(wrong) / len(rows) <= 0.65
    by_task: dict[str, list[bool]] = {}
    for r in rows:
        by_task.setdefault(parse_prompt(r["prompt"])["task"], []).append(judge(r, answer(r["messages"])))
    # every error mode is the majority where it applies, so greedy decoding reproduces it
    assert sum(by_task["max"]) / len(by_task["max"]) < 0.45
    assert sum(by_task["reverse"]) / len(by_task["reverse"]) < 0.45


GENERATIONS = {
    "sft": ["1 2 3", "9 Hope this helps!", "3 2 1 Done.", "1 3"],
    "simpo": ["1 2 3", "9", "3 2 1", "1 2"],
    "other": ["1 3 2", "9", "3 2 1 Done.", "1 1 3"],
}


def hand_made() -> tuple[list[dict], dict[str, list[dict]]]:
    records = [
        {"prompt_id": "a", "instruction": "x", "task": "sort", "items": [3, 1, 2]},
        {"prompt_id": "b", "instruction": "x", "task": "max", "items": [9, 1]},
        {"prompt_id": "c", "instruction": "x", "task": "reverse", "items": [1, 2, 3]},
        {"prompt_id": "d", "instruction": "x", "task": "sort", "items": [1, 3, 1]},
    ]
    generations = {name: [{"prompt_id": r["prompt_id"], "instruction": "x", "output": out,
                           "n_tokens": len(out.split())} for r, out in zip(records, outs)]
                   for name, outs in GENERATIONS.items()}
    return records, generations


def test_win_rate_and_table(tmp_path):
    assert demo_eval.win_rate([False, True, True], [True, True, False]) == pytest.approx(0.5)
    assert demo_eval.win_rate([False, False], [True, False]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        demo_eval.win_rate([True], [])
    records, generations = hand_made()
    generations["other"].reverse()  # order of rows must not matter
    summary = demo_eval.summarize(records, generations)
    sft, simpo, other = (summary["models"][k] for k in ("sft", "simpo", "other"))
    assert (sft["accuracy"], simpo["accuracy"], other["accuracy"]) == (0.25, 0.75, 0.5)
    assert sft["win_rate_vs_baseline"] is None
    assert simpo["win_rate_vs_baseline"] == pytest.approx((0.5 + 1 + 1 + 0.5) / 4)
    assert other["win_rate_vs_baseline"] == pytest.approx((0 + 1 + 0.5 + 1) / 4)
    assert simpo["task_accuracy"] == {"max": 1.0, "reverse": 1.0, "sort": 0.5}
    assert sft["mean_length"] == pytest.approx((3 + 4 + 4 + 2) / 4)
    table = demo_eval.markdown_table(summary)
    assert table.splitlines()[0].startswith("| model | accuracy | acc. max |")
    assert "| simpo | 75.0% | 100.0% | 100.0% | 50.0% | 2.2 | 75.0% |" in table
    demo_eval.plot(summary, tmp_path / "results.png")
    assert (tmp_path / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_results_figure_reads_on_its_own():
    """Title, values on the bars, 0% visible and labelled, a task not judged marked n/a."""
    records, generations = hand_made()
    summary = demo_eval.summarize(records, generations)
    summary["models"]["other"]["task_accuracy"]["max"] = 0.0
    del summary["models"]["other"]["task_accuracy"]["sort"]
    ax = demo_eval.figure(summary).axes[0]
    assert ax.get_title() == "Demo: accuracy on 4 held-out prompts" and ax.get_ylabel()
    labels = [t.get_text() for t in ax.texts]
    assert labels[:4] == ["25%", "0%", "0%", "50%"]  # sft: overall, max, reverse, sort
    assert labels[-4:] == ["50%", "0%", "0%", "n/a"]  # other
    zero, missing = ax.containers[2][1], ax.containers[2][3]  # other's "max" (0%) and "sort" (not judged)
    assert 0 < zero.get_height() < 0.01 and zero.get_visible() and not missing.get_visible()
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["sft", "simpo (win rate vs sft: 75%)", "other (win rate vs sft: 62%)"]


def test_evaluate_writes_results_and_reuses_generations(tmp_path):
    records, _ = hand_made()
    model = build_tiny_model("llama3", tmp_path / "model", ["x", "1 2 3", "9"] * 30, vocab_size=280, hidden_size=16)
    settings = GenerationSettings(max_new_tokens=4)
    summary = demo_eval.evaluate({"base": str(model), "same": str(model)}, _write(tmp_path / "h.jsonl", records),
                                 tmp_path / "out", settings, alpaca_eval=False)
    assert summary["models"]["same"]["win_rate_vs_baseline"] == 0.5  # same model, same greedy answers
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"results.md", "results.json", "results.png",
                                                               "generations"}
    cache = tmp_path / "out" / "generations" / "base.jsonl"
    rows = read(cache)
    assert sorted(r["id"] for r in rows) == ["a", "b", "c", "d"]
    cache.write_text("".join(json.dumps(r | {"output": "1 2 3"}) + "\n" for r in rows))  # reused, not regenerated
    again = demo_eval.cached_generations("base", model, records, settings, tmp_path / "out")
    assert [g["output"] for g in again] == ["1 2 3"] * 4 and again[0]["instruction"] == "x"


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
