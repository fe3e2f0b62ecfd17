"""MT-Bench: the project's two-turn answers in fschat's format, judged by fschat 0.2.36's real
`gen_judgment` (single-answer grading) and `show_result` in their own virtualenv, against a program
judge on 127.0.0.1. The question set is made up (tests/fixtures/mt_bench: one math question with a
reference answer); fschat's wheel ships no judge prompts, so the fixture's judge_prompts.jsonl is a
small file in fschat's schema written for these tests."""
import json
import os
import statistics
from pathlib import Path

import pytest

from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.evaluation import mt_bench
from simpo_recipes.evaluation.generation import GenerationSettings, generate
from simpo_recipes.evaluation.judge import Judge
from simpo_recipes.evaluation.local_judge import ProgramJudge
from simpo_recipes.files import read_jsonl

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "fixtures" / "mt_bench"
KEY = "sk-mtbench-test-key-42"


def rate(question: str, answer: str) -> int:
    return 1 + (len(question) + 3 * len(answer)) % 10


@pytest.fixture(scope="module")
def fschat(tmp_path_factory):
    cache = Path(os.environ.get("SIMPO_CACHE_DIR") or REPO / ".cache")
    try:
        return mt_bench.fschat_python(cache)
    except mt_bench.MTBenchError as e:
        pytest.skip(f"fschat's virtualenv cannot be built here: {e}")


def test_turn_two_is_asked_with_turn_one_in_context():
    questions = mt_bench.load_questions(DATA)
    first = mt_bench.requests(questions)
    assert [r["temperature"] for r in first] == [0.7, 0.0, 0.1]  # writing, math, stem
    second = mt_bench.requests(questions, [{"output": f"answer {k}"} for k in range(3)])
    assert second[1]["messages"] == [{"role": "user", "content": "What is 3 + 4?"},
                                     {"role": "assistant", "content": "answer 1"},
                                     {"role": "user", "content": "And 3 times 4?"}]
    assert [r["id"] for r in second] == ["901-2", "902-2", "903-2"]


@pytest.mark.slow
def test_scores_follow_from_the_judges_ratings_and_judging_resumes(fschat, tmp_path):
    questions = mt_bench.load_questions(DATA)
    texts = [t for q in questions for t in q["turns"]] * 20
    model = build_tiny_model("llama3", tmp_path / "model", texts, vocab_size=300, hidden_size=32)
    settings = GenerationSettings(max_new_tokens=10)
    first = generate(tmp_path / "gen.jsonl", model, mt_bench.requests(questions), settings)
    second = generate(tmp_path / "gen.jsonl", model, mt_bench.requests(questions, first), settings)
    work = tmp_path / "mt_bench"
    answers = mt_bench.write_answers(work, questions, first, second, "tiny-model")
    rows = read_jsonl(answers)
    assert [r["choices"][0]["turns"] for r in rows] == [[a["output"], b["output"]] for a, b in zip(first, second)]
    assert {"question_id", "answer_id", "model_id", "choices", "tstamp"} <= set(rows[0])

    expected_1 = [rate(q["turns"][0], a["output"]) for q, a in zip(questions, first)]
    expected_2 = [rate(q["turns"][1], b["output"]) for q, b in zip(questions, second)]
    with ProgramJudge(lambda q, a, b: 0.5, rate, api_key=KEY) as server:
        judge = Judge("gpt-4-1106-preview", server.base_url, KEY)
        result = mt_bench.judge(work, DATA, "tiny-model", judge, fschat)
        assert result["turn_1"] == pytest.approx(statistics.mean(expected_1), abs=1e-6)
        assert result["turn_2"] == pytest.approx(statistics.mean(expected_2), abs=1e-6)
        assert result["score"] == pytest.approx(statistics.mean(expected_1 + expected_2), abs=1e-6)
        assert server.calls["mt_bench"] == 6
        # fschat looks the reference answers up under the judge's name; the fixture has gpt-4's only
        assert (work / "data/mt_bench/reference_answer/gpt-4-1106-preview.jsonl").read_text() == (
            DATA / "reference_answer/gpt-4.jsonl").read_text()
        assert result["reference_answers"] == "gpt-4" and result["judge"] == "gpt-4-1106-preview"

        judgments = work / "data/mt_bench/model_judgment/gpt-4-1106-preview_single.jsonl"
        kept = [r for r in read_jsonl(judgments) if r["question_id"] != 902]
        broken = next(r for r in kept if r["question_id"] == 903 and r["turn"] == 2)
        broken.update(score=-1, judgment="$ERROR$")  # how fschat records a failed call
        judgments.write_text("".join(json.dumps(r) + "\n" for r in kept))
        assert mt_bench.judge(work, DATA, "tiny-model", judge, fschat) == result
        assert server.calls["mt_bench"] == 6 + 4  # question 902 (two turns) and 903 (redone whole)
        assert len(read_jsonl(judgments)) == 6  # one judgement per question and turn, none twice

    for path in tmp_path.rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path


def test_reference_answers_named_after_the_judge_or_gpt4s_with_a_notice(tmp_path, capsys):
    (tmp_path / "reference_answer").mkdir()
    (tmp_path / "reference_answer" / "gpt-4.jsonl").write_text("{}\n")
    assert mt_bench.reference_answers(tmp_path, "gpt-4-1106-preview").name == "gpt-4.jsonl"
    assert "notice: no" in capsys.readouterr().err
    (tmp_path / "reference_answer" / "gpt-4-1106-preview.jsonl").write_text("{}\n")
    assert mt_bench.reference_answers(tmp_path, "gpt-4-1106-preview").name == "gpt-4-1106-preview.jsonl"
    assert mt_bench.reference_answers(tmp_path, "gpt-4").name == "gpt-4.jsonl"
    assert capsys.readouterr().err == ""


def test_show_result_parsing():
    text = ("########## First turn ##########\n            score\nmodel turn\nm-1   1       8.0\n\n"
            "########## Second turn ##########\n            score\nmodel turn\nm-1   2       1.5\n\n"
            "########## Average ##########\n       score\nmodel\nm-1      4.75\n")
    assert mt_bench.parse_show_result(text, "m-1") == {"turn_1": 8.0, "turn_2": 1.5, "score": 4.75}
    with pytest.raises(mt_bench.MTBenchError, match="no first turn score for m-2"):
        mt_bench.parse_show_result(text, "m-2")
