"""AlpacaEval 2: the project's answers in alpaca_eval's format, judged by its real `alpaca_eval
evaluate` (a subprocess) against a program judge served on 127.0.0.1; the leaderboard must follow
from the judge's verdicts, and judging resumes."""
import json
import socket
import statistics
from pathlib import Path

import alpaca_eval
import pytest

from simpo_demo.task import expected_answer
from simpo_demo.task import judge as right
from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.evaluation import alpacaeval
from simpo_recipes.evaluation.generation import GenerationSettings, generate
from simpo_recipes.evaluation.judge import (
    Judge,
    JudgeError,
    check_reachable,
    judge_from_env,
)
from simpo_recipes.evaluation.local_judge import ProgramJudge

KEY = "sk-test-0123456789abcdef"  # must never reach a file
TASKS = [("sort", [3, 1, 2]), ("max", [4, 9, 1]), ("reverse", [1, 2, 3]), ("sort", [5, 5, 1]),
         ("max", [2, 8]), ("reverse", [7, 0, 4]), ("sort", [9, 3, 3, 1]), ("max", [6, 6, 2])]


def reference_rows() -> list[dict]:
    """Made-up references: every other one right, the others right but chatty (wrong)."""
    rows = []
    for k, (task, items) in enumerate(TASKS):
        instruction = {"sort": "Sort these digits in ascending order: {}", "max": "Find the maximum of these digits: {}",
                       "reverse": "Reverse this list: {}"}[task].format(" ".join(map(str, items)))
        answer = expected_answer(task, items) + ("" if k % 2 == 0 else " Done!")
        rows.append({"instruction": instruction, "output": answer, "generator": "made-up", "dataset": f"toy-{task}"})
    return rows


def prefer(instruction: str, a: str, b: str) -> float:
    """Right beats wrong; otherwise the shorter answer, 0.75 to 0.25; the same length ties."""
    ra, rb = right({"instruction": instruction}, a), right({"instruction": instruction}, b)
    if ra != rb:
        return float(ra)
    return 0.5 if len(a) == len(b) else 0.75 if len(a) < len(b) else 0.25


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    texts = [r["instruction"] for r in reference_rows()] + [r["output"] for r in reference_rows()]
    return build_tiny_model("llama3", tmp_path_factory.mktemp("model"), texts * 10, vocab_size=300, hidden_size=32)


def files_under(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
def test_leaderboard_follows_from_the_judges_verdicts_and_resumes(model, tmp_path):
    reference_file = tmp_path / "reference.json"
    reference_file.write_text(json.dumps(reference_rows()))
    ref_path, reference = alpacaeval.load_reference(reference_file)
    answers = generate(tmp_path / "gen.jsonl", model, alpacaeval.requests(reference),
                       GenerationSettings(max_new_tokens=8))
    outputs = alpacaeval.write_outputs(tmp_path / "out" / "model_outputs.json", reference, answers, "tiny-model")
    written = json.loads(outputs.read_text())
    assert [set(r) for r in written] == [{"instruction", "output", "generator", "dataset"}] * len(TASKS)
    assert [r["instruction"] for r in written] == [r["instruction"] for r in reference]  # order and exact text
    package = Path(alpaca_eval.__file__).parent
    before = files_under(package)

    with ProgramJudge(prefer, api_key=KEY) as server:
        judge = Judge(model="local-judge", base_url=server.base_url, api_key=KEY)  # no "gpt-4": chat endpoint anyway
        result = alpacaeval.evaluate(outputs, ref_path, judge, tmp_path / "out", "tiny-model")
        wins = [prefer(r["instruction"], w["output"], r["output"]) for r, w in zip(reference, written)]
        assert result["win_rate"] == pytest.approx(100 * statistics.mean(wins), abs=1e-6)
        assert result["standard_error"] == pytest.approx(100 * statistics.stdev(wins) / len(wins) ** 0.5, abs=1e-6)
        assert result["n_total"] == len(TASKS) and result["length_controlled_winrate"] is None
        assert "805" in result["lc_note"] and result["judge"] == "local-judge"
        assert result["judge_host"] == server.base_url.split("/")[2]
        asked = server.calls["alpaca_eval"]
        assert asked == sum(w["output"] != r["output"] for r, w in zip(reference, written))

        assert alpacaeval.evaluate(outputs, ref_path, judge, tmp_path / "out", "tiny-model") == result
        assert server.calls["alpaca_eval"] == asked  # every judgement came from the cache
        cache = tmp_path / "out" / "annotations_cache.json"
        rows = json.loads(cache.read_text())
        for row in rows[:2]:
            row["preference"] = -1  # how alpaca_eval caches a judgement that failed
        cache.write_text(json.dumps(rows))
        assert alpacaeval.evaluate(outputs, ref_path, judge, tmp_path / "out", "tiny-model") == result
        assert server.calls["alpaca_eval"] == asked + 2  # only the failed ones were asked again

    assert files_under(package) == before  # caches, weights, leaderboards: all under tmp_path
    for path in files_under(tmp_path):
        assert KEY.encode() not in Path(path).read_bytes(), path


def fake_hub_cache(root: Path, n: int) -> Path:
    """A Hugging Face cache holding a made-up df_gamed.csv (the length-controlled fit's
    instruction difficulties and gamed baselines), laid out as hf_hub_download finds it offline."""
    import pandas as pd

    commit = "0" * 40
    repo = root / "datasets--tatsu-lab--alpaca_eval"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    rows = [{"model": f"gamed-{g}", "index": i, "instruction_difficulty": (i % 7) / 7 - 0.5,
             "preference": (i + g) % 2 * 0.8 + 0.1, "std_delta_len": (-1) ** g * ((i % 5) / 5), "not_gamed_baseline": False}
            for g in range(2) for i in range(n)]
    (repo / "snapshots" / commit).mkdir(parents=True)
    pd.DataFrame(rows).to_csv(repo / "snapshots" / commit / "df_gamed.csv", index=False)
    return root


@pytest.mark.slow
def test_length_controlled_run_writes_nothing_outside_the_output_folder(tmp_path, monkeypatch):
    """With AlpacaEval's 805 instructions the length-controlled fit runs (here on a made-up
    df_gamed.csv): no `null/` folder in the working directory, no weights in site-packages."""
    import huggingface_hub.constants

    digits = [[a, b, c] for a in range(10) for b in range(10) for c in range(10)]
    reference = [{"instruction": f"Reverse this list: {' '.join(map(str, d))}", "output": expected_answer("reverse", d),
                  "generator": "made-up", "dataset": "toy"} for d in digits[:alpacaeval.OFFICIAL_SIZE]]
    (tmp_path / "reference.json").write_text(json.dumps(reference))
    answers = [{"output": r["output"] if k % 3 else f"wrong, {k}"} for k, r in enumerate(reference)]  # lengths vary
    outputs = alpacaeval.write_outputs(tmp_path / "out" / "model_outputs.json", reference, answers, "m")
    cache = fake_hub_cache(tmp_path / "hub", alpacaeval.OFFICIAL_SIZE)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # the alpaca_eval process
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # this one
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    package = Path(alpaca_eval.__file__).parent
    before = files_under(package)
    with ProgramJudge(prefer, api_key=KEY) as server:
        result = alpacaeval.evaluate(outputs, tmp_path / "reference.json", Judge("local-judge", server.base_url, KEY),
                                     tmp_path / "out", "m", echo=False)
    assert result["lc_note"] is None and 0 <= result["length_controlled_winrate"] <= 100
    assert result["win_rate"] == pytest.approx(100 * statistics.mean(
        prefer(r["instruction"], a["output"], r["output"]) for r, a in zip(reference, answers)), abs=1e-6)
    assert list(work.iterdir()) == [] and not list(tmp_path.rglob("null"))
    assert files_under(package) == before


def test_missing_df_gamed_says_how_to_provide_it(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    note = alpacaeval.length_controlled_note(alpacaeval.OFFICIAL_SIZE)
    assert note.startswith("not computed: cannot download df_gamed.csv")
    assert "--reference_outputs" not in note and "hf download tatsu-lab/alpaca_eval df_gamed.csv" in note
    assert "HF_HUB_CACHE" in note
    assert "805" in alpacaeval.length_controlled_note(8)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_or_refusing_judge_fails_once_clearly(monkeypatch):
    monkeypatch.setenv("JUDGE_BASE_URL", f"http://127.0.0.1:{closed_port()}/v1")
    monkeypatch.setenv("JUDGE_API_KEY", KEY)
    monkeypatch.delenv("JUDGE_MODEL", raising=False)
    judge = judge_from_env("gpt-4-1106-preview")
    assert judge.model == "gpt-4-1106-preview" and KEY not in repr(judge)
    with pytest.raises(JudgeError, match="cannot be reached") as error:
        check_reachable(judge, timeout=5)
    assert KEY not in str(error.value)
    with ProgramJudge(prefer, api_key="another-key") as server:
        with pytest.raises(JudgeError, match="HTTP 401"):
            check_reachable(Judge("gpt-4", server.base_url, KEY))
        check_reachable(Judge("gpt-4", server.base_url, "another-key"))
    monkeypatch.delenv("JUDGE_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(JudgeError, match="JUDGE_API_KEY"):
        judge_from_env("gpt-4")


def test_judge_record_keeps_the_host_only():
    judge = Judge("gpt-4-turbo", "https://user:secret@api.example.com:8443/v1?key=abc", KEY)
    assert judge.record() == {"judge": "gpt-4-turbo", "judge_host": "api.example.com:8443"}
    assert Judge("m", "https://api.openai.com/v1", KEY).record()["judge_host"] == "api.openai.com"


def test_reference_file_errors_name_the_file_and_row(tmp_path, monkeypatch):
    bad = tmp_path / "ref.json"
    bad.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "a", "output": "c"}]))
    with pytest.raises(alpacaeval.AlpacaEvalError, match=r"ref.json row 1: instruction repeated"):
        alpacaeval.load_reference(bad)
    bad.write_text(json.dumps([{"instruction": "a"}]))
    with pytest.raises(alpacaeval.AlpacaEvalError, match=r"row 0: needs string `instruction` and `output`"):
        alpacaeval.load_reference(bad)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(alpacaeval.AlpacaEvalError, match="alpaca_eval_gpt4_baseline.json.*--reference_outputs"):
        alpacaeval.load_reference(None)
