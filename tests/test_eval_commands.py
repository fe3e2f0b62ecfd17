"""The README's evaluation commands on a copy of the repository: `make eval MODEL=tiny` runs
AlpacaEval 2 and MT-Bench against a program judge on 127.0.0.1 (named only by the environment),
and `make table` sets the results beside the paper's (none for the tiny recipe: marked missing)."""
import json
import secrets

import pytest
from conftest import REPO_ROOT, run_make
from test_alpaca_eval import prefer, reference_rows
from test_mt_bench import rate

from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.evaluation.local_judge import ProgramJudge


@pytest.mark.slow
def test_make_eval_then_make_table(repo_copy, tmp_path_factory):
    key = secrets.token_hex(16)
    references = reference_rows()
    texts = [r["instruction"] for r in references] * 20
    build_tiny_model("llama3", repo_copy / "outputs/tiny/simpo", texts, vocab_size=300, hidden_size=32)
    reference_file = tmp_path_factory.mktemp("ref") / "reference.json"
    reference_file.write_text(json.dumps(references))
    args = (f"--benchmarks alpaca_eval mt_bench --reference_outputs {reference_file} "
            f"--mt_bench_data {REPO_ROOT / 'tests/fixtures/mt_bench'} --max_new_tokens 8")
    with ProgramJudge(prefer, rate, api_key=key) as server:
        env = {"JUDGE_BASE_URL": server.base_url, "JUDGE_API_KEY": key, "SIMPO_CACHE_DIR": str(REPO_ROOT / ".cache")}
        result = run_make(repo_copy, "eval", "MODEL=tiny", f"EVAL_ARGS={args}", env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert server.calls["alpaca_eval"] > 0 and server.calls["mt_bench"] == 6

    saved = json.loads((repo_copy / "outputs/eval/tiny/results.json").read_text())
    outputs = json.loads((repo_copy / "outputs/eval/tiny/alpaca_eval/model_outputs.json").read_text())
    wins = [prefer(r["instruction"], o["output"], r["output"]) for r, o in zip(references, outputs)]
    alpaca = saved["benchmarks"]["alpaca_eval"]
    assert alpaca["win_rate"] == pytest.approx(100 * sum(wins) / len(wins), abs=1e-6)
    assert alpaca["generation"]["max_new_tokens"] == 8 and alpaca["generation"]["temperature"] == 0.0
    assert saved["benchmarks"]["mt_bench"]["judge"] == "gpt-4" and 1 <= saved["benchmarks"]["mt_bench"]["score"] <= 10
    host = server.base_url.split("/")[2]
    assert {(e["decoding_mode"], e["judge_host"]) for e in saved["benchmarks"].values()} == {("reference", host)}

    table = run_make(repo_copy, "table")
    assert table.returncode == 0, table.stdout[-2000:] + table.stderr[-2000:]
    mt = saved["benchmarks"]["mt_bench"]["score"]
    assert f"| tiny | ours | — | {alpaca['win_rate']:.1f}% | — | {mt:.1f} |" in table.stdout
    assert "| tiny | paper | — | — | — | — |" in table.stdout
    assert f"- tiny, AlpacaEval 2: decoding reference (greedy); judge gpt-4-1106-preview at {host}" in table.stdout
    assert (repo_copy / "outputs/eval/table.png").stat().st_size > 10_000
    for path in repo_copy.rglob("*"):
        assert not path.is_file() or key.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_offline_eval_with_the_local_judge_is_one_command(repo_copy):
    """README: `make demo-data`, a model, then `make eval MODEL=tiny JUDGE=local`: AlpacaEval 2 on the
    demo's held-out prompts against their correct answers, judged by the demo's program on 127.0.0.1."""
    from simpo_demo.task import judge, write_demo_data

    heldout = write_demo_data(repo_copy / "data/demo", n_sft=1, n_prefs=1, n_heldout=12, n_test=1)["heldout"]
    build_tiny_model("llama3", repo_copy / "outputs/tiny/simpo", heldout.read_text().splitlines() * 5,
                     vocab_size=300, hidden_size=32)
    result = run_make(repo_copy, "eval", "MODEL=tiny", "JUDGE=local", "EVAL_ARGS=--max_new_tokens 6")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    alpaca = json.loads((repo_copy / "outputs/eval/tiny/results.json").read_text())["benchmarks"]["alpaca_eval"]
    outputs = json.loads((repo_copy / "outputs/eval/tiny/alpaca_eval/model_outputs.json").read_text())
    right = [judge({"instruction": o["instruction"]}, o["output"]) for o in outputs]
    assert len(outputs) == 12 and alpaca["win_rate"] == pytest.approx(100 * sum(0.5 * r for r in right) / 12, abs=1e-6)
    assert alpaca["judge"] == "demo-program-judge" and alpaca["judge_host"].startswith("127.0.0.1:")
