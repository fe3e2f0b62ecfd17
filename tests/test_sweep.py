"""`make sweep`: the points of a sequential (authors' order) and a grid search, the sweep's own record
of finished points, its table and plot, Slurm array jobs; end to end on the tiny recipe (two points)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_make

from simpo_demo.task import write_demo_data
from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.config.arguments import ConfigError
from simpo_recipes.pipeline.recipes import PAPER_GRID, Sweep, load_recipe
from simpo_recipes.pipeline.sweep import (
    Metric,
    Point,
    SweepSpec,
    benchmarks,
    check_definition,
    chosen_values,
    figure,
    final_values,
    markdown,
    missing_metrics,
    read_records,
    slurm_script,
)
from simpo_recipes.training.reporting import read_metrics

REPO = Path(__file__).resolve().parents[1]
ACCURACY, LOSS = Metric.parse("eval_rewards/accuracies"), Metric.parse("eval_loss")


def spec(**grid):
    grid = grid or {"learning_rate": [1e-5, 5e-5, 2e-4], "gamma_beta_ratio": [0.25, 0.5], "beta": [2.5, 10.0]}
    return SweepSpec(grid, "sequential", [ACCURACY, LOSS], {"learning_rate": 5e-5, "gamma_beta_ratio": 0.5,
                                                            "beta": 2.5})


def finished(sweep_dir: Path, point: Point, accuracy: float, loss: float = 1.0) -> None:
    (sweep_dir / point.name).mkdir(parents=True, exist_ok=True)
    record = {"point": point.name, "values": point.values, "axis": point.axis, "seconds": 3.0,
              "output_dir": str(sweep_dir / point.name),
              "metrics": {"eval_rewards/accuracies": accuracy, "eval_loss": loss}}
    (sweep_dir / point.name / "sweep_point.json").write_text(json.dumps(record))


def test_default_grid_is_the_papers_in_the_authors_order():
    assert list(Sweep().grid) == ["learning_rate", "gamma_beta_ratio", "beta"] == list(PAPER_GRID)
    assert Sweep().grid["learning_rate"] == [3e-7, 5e-7, 6e-7, 1e-6] and Sweep().grid["beta"] == [2.0, 2.5, 10.0]
    assert load_recipe(REPO / "recipes/llama3-instruct.yaml").sweep == Sweep()
    with pytest.raises(ConfigError, match="choose sequential or grid"):
        Sweep(search="random")
    with pytest.raises(ConfigError, match="distinct values"):
        Sweep(grid={"beta": [2.0, 2.0]})


def test_sequential_search_tunes_one_key_after_another(tmp_path):
    s = spec()
    first = s.axis_points("learning_rate", {})
    assert [p.name for p in first] == ["lr1e-05_gbr0.5_beta2.5", "lr5e-05_gbr0.5_beta2.5", "lr0.0002_gbr0.5_beta2.5"]
    with pytest.raises(ConfigError, match="learning_rate is not tuned yet"):
        chosen_values(s, read_records(tmp_path), upto="gamma_beta_ratio")
    for point, accuracy in zip(first, (0.6, 0.8, 0.7)):
        finished(tmp_path, point, accuracy)
    chosen = chosen_values(s, read_records(tmp_path), upto="gamma_beta_ratio")
    assert chosen == {"learning_rate": 5e-5}
    second = s.axis_points("gamma_beta_ratio", chosen)  # the later key (beta) stays at the recipe's value
    assert [p.values for p in second] == [{"learning_rate": 5e-5, "gamma_beta_ratio": 0.25, "beta": 2.5},
                                          {"learning_rate": 5e-5, "gamma_beta_ratio": 0.5, "beta": 2.5}]
    assert second[1].name == first[1].name  # the same run: it is not run twice
    finished(tmp_path, second[0], 0.9)
    table = markdown(s, read_records(tmp_path), "t")
    assert "| learning_rate | 5e-05 | 0.5 | 2.5 | 0.8 | 1 | 3 | `lr5e-05_gbr0.5_beta2.5` **(best)** |" in table
    assert "| gamma_beta_ratio | 5e-05 | 0.25 | 2.5 | 0.9 | 1 | 3 | `lr5e-05_gbr0.25_beta2.5` **(best)** |" in table
    assert "| beta | 5e-05 | 0.25 | 10 | not run yet |" in table
    assert table.rstrip().endswith("Best so far: `lr5e-05_gbr0.25_beta2.5` (eval_rewards/accuracies 0.9): "
                                   "learning_rate 5e-05, gamma_beta_ratio 0.25, beta 2.5")
    ax = figure(s, read_records(tmp_path), "t").axes[0]
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.texts] == ["0.6", "0.8", "0.7"]
    # a tie keeps the recipe's value: nothing says another one is better
    tied = tmp_path / "tied"
    for point in first:
        finished(tied, point, 1.0, loss=float(len(point.name)))
    assert chosen_values(s, read_records(tied), upto="gamma_beta_ratio") == {"learning_rate": 5e-5}


def test_grid_search_points_metrics_and_overrides():
    s = SweepSpec({"beta": ["2.5", 10], "gamma": [0.5, 1.0]}, "grid", [LOSS], {"beta": 2.5, "gamma": 1.0})
    assert s.grid["beta"] == [2.5, 10]  # YAML strings read as numbers
    assert [p.name for p in s.grid_points()] == ["beta2.5_gamma0.5", "beta2.5_gamma1", "beta10_gamma0.5",
                                                 "beta10_gamma1"]
    # an absolute margin clears the ratio (the config accepts one of them)
    assert Point({"gamma": 0.5}).overrides() == ["--gamma=0.5", "--gamma_beta_ratio="]
    assert Point({"gamma_beta_ratio": 0.5, "beta": 2}).overrides() == ["--gamma_beta_ratio=0.5", "--beta=2",
                                                                       "--gamma="]
    assert not LOSS.higher_is_better and ACCURACY.higher_is_better and Metric.parse("eval_kl:max").higher_is_better
    assert LOSS.best([{"metrics": {"eval_loss": 2.0}}, {"metrics": {"eval_loss": 1.0}}, {"metrics": {}}]) == {
        "metrics": {"eval_loss": 1.0}}


def test_metrics_come_from_the_log_or_the_points_evaluation(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "eval_loss": 2.0}\n{"step": 2, "eval_loss": 1.5}\n')
    (tmp_path / "eval/results.json").write_text(json.dumps({"benchmarks": {"alpaca_eval": {"win_rate": 41.5}}}))
    names = ["eval_loss", "alpaca_eval/win_rate", "mt_bench/score", "eval_rewards/accuracies"]
    assert final_values(tmp_path, names) == {"eval_loss": 1.5, "alpaca_eval/win_rate": 41.5, "mt_bench/score": None,
                                             "eval_rewards/accuracies": None}
    metrics = [Metric.parse(n) for n in names]
    assert benchmarks(metrics) == ["alpaca_eval", "mt_bench"]
    record = {"metrics": {"eval_loss": 1.5, "mt_bench/score": None}}
    assert [m.name for m in missing_metrics(record, metrics)] == ["alpaca_eval/win_rate", "eval_rewards/accuracies"]


def test_a_sweep_folder_keeps_one_definition(tmp_path):
    definition = {"recipe": "r", "stage_config": "c", "fixed": ["--max_steps=5"], "from_sft": None, "objective": None,
                  "grid": {}}
    check_definition(tmp_path, definition)
    check_definition(tmp_path, definition | {"grid": {"beta": [2.0]}})  # a grown grid: same sweep
    with pytest.raises(ConfigError, match=r"(?s)other settings:\n  fixed: \['--max_steps=5'\] then, "
                                          r"\['--max_steps=6'\] now.*another --sweep_dir"):
        check_definition(tmp_path, definition | {"fixed": ["--max_steps=6"]})


def test_slurm_script_is_an_array_on_one_node(tmp_path):
    text = slurm_script("sweep-x-beta", 8, tmp_path, tmp_path / "logs", ["python", "scripts/sweep.py", "a b"],
                        "beta", 3)
    assert "#SBATCH --array=0-2\n" in text and "#SBATCH --gpus-per-node=8\n" in text and f"cd {tmp_path}\n" in text
    assert text.rstrip().endswith("""exec python scripts/sweep.py 'a b' --task "beta:$SLURM_ARRAY_TASK_ID\"""")
    report = slurm_script("r", 0, tmp_path, tmp_path, ["python", "s.py", "--report"], None)
    assert "--array" not in report and "--gpus-per-node" not in report and report.rstrip().endswith("--report")


SBATCH = """#!/bin/sh
# Stand-in for Slurm's sbatch: records the submission, then runs the job script at once (an array
# one index after another), its output to a log; prints the job id (--parsable).
echo "$*" >> "$SBATCH_LOG"
for last in "$@"; do :; done
n=$(sed -n 's/^#SBATCH --array=0-//p' "$last")
if [ -n "$n" ]; then
  i=0
  while [ "$i" -le "$n" ]; do
    SLURM_ARRAY_TASK_ID=$i bash "$last" >> "$SBATCH_LOG.jobs" 2>&1 || exit 1
    i=$((i+1))
  done
else
  bash "$last" >> "$SBATCH_LOG.jobs" 2>&1 || exit 1
fi
wc -l < "$SBATCH_LOG" | tr -d ' '
"""


@pytest.mark.slow
def test_tiny_sweep_runs_resumes_and_submits_to_slurm(repo_copy):
    """make sweep MODEL=tiny over two points (a few steps each); the rerun skips both; the same sweep
    submitted as Slurm array jobs (stand-in sbatch) finds them finished and rewrites the report."""
    write_demo_data(repo_copy / "data" / "demo", n_sft=16, n_prefs=32, n_heldout=2, n_test=8)
    texts = [line for f in (repo_copy / "data" / "demo").rglob("*.jsonl") for line in f.read_text().splitlines()]
    build_tiny_model("llama3", repo_copy / "outputs/tiny/base", texts, vocab_size=320, hidden_size=32)
    shutil.copytree(repo_copy / "outputs/tiny/base", repo_copy / "outputs/tiny/sft")  # the SFT stage is done
    sweep_dir = repo_copy / "sweep"
    grid = ["--grid", "learning_rate=1e-5,1e-3", f"--sweep_dir={sweep_dir}"]
    fixed = ["--max_steps=2", "--per_device_train_batch_size=8", "--total_batch_size=8", "--save_strategy=no"]
    result = run_make(repo_copy, "sweep", "MODEL=tiny", f"SWEEP_ARGS={' '.join(grid)}", f"ARGS={' '.join(fixed)}",
                      env={"PYTHONUNBUFFERED": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    command = [sys.executable, str(repo_copy / "scripts/sweep.py"), "recipes/tiny.yaml", *grid, *fixed]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

    def sweep(*extra, **more_env):
        result = subprocess.run(command + list(extra), cwd=repo_copy, env=env | more_env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    assert "sft stage: reusing the model in outputs/tiny/sft" in out
    records = read_records(sweep_dir)
    assert sorted(records) == ["lr0.001", "lr1e-05"]
    for name, record in records.items():  # each point its own run; its final held-out metrics recorded
        logged = [m for m in read_metrics(sweep_dir / name / "metrics.jsonl") if "eval_loss" in m][-1]
        assert record["metrics"] == {k: logged[k] for k in ("eval_rewards/accuracies", "eval_loss")}
        assert (sweep_dir / name / "model.safetensors").exists()
    table = (sweep_dir / "sweep.md").read_text()
    assert table in out and (sweep_dir / "sweep.png").stat().st_size > 10_000
    for record in records.values():
        assert f"| {record['metrics']['eval_rewards/accuracies']:.4g} | {record['metrics']['eval_loss']:.4g} |" in table

    again = sweep()
    assert again.count("finished, skipped") == 2 and "->" not in again
    # a benchmark metric added later: each point's model evaluated (the demo's AlpacaEval, program judge), not retrained
    judged = sweep("--metric", "alpaca_eval/win_rate", "--metric", "eval_loss", "--eval_args=--judge local")
    assert judged.count("finished, metrics added") == 2 and "->" not in judged
    for name, record in read_records(sweep_dir).items():
        evaluated = json.loads((sweep_dir / name / "eval/results.json").read_text())["benchmarks"]["alpaca_eval"]
        assert record["metrics"]["alpaca_eval/win_rate"] == evaluated["win_rate"] and evaluated["n_total"] == 2
    assert "| alpaca_eval/win_rate | eval_loss |" in (sweep_dir / "sweep.md").read_text()
    sweep()  # back to the default metrics, still recorded

    bin_dir = repo_copy / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    log = repo_copy / "sbatch.log"
    (sweep_dir / "sweep.md").unlink()
    out = sweep("--slurm", PATH=f"{bin_dir}:{os.environ['PATH']}", SBATCH_LOG=str(log))
    submitted = log.read_text().splitlines()
    assert [Path(line.split()[-1]).name for line in submitted] == ["prepare.sbatch", "learning_rate.sbatch",
                                                                   "report.sbatch"]
    assert "--dependency=afterok:1" in submitted[1] and "--dependency=afterany:2" in submitted[2]
    assert "#SBATCH --array=0-1" in (sweep_dir / "slurm/learning_rate.sbatch").read_text()
    jobs = Path(f"{log}.jobs").read_text()
    assert jobs.count("finished, skipped") == 2 and "reusing the model in outputs/tiny/sft" in jobs
    assert (sweep_dir / "sweep.md").read_text() == table
