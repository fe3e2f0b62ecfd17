"""End to end through the real scripts: the tiny recipe's stages, outputs, resume after kill -9,
and what a run folder guarantees (README: What a run folder guarantees)."""
import fcntl
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_make
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from simpo_demo.task import write_demo_data
from simpo_demo.tiny_models import build_tiny_model
from simpo_recipes.objectives import OBJECTIVES
from simpo_recipes.pipeline.recipes import load_recipe
from simpo_recipes.training.reporting import read_metrics

REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SMALL = ["--per_device_train_batch_size=4", "--total_batch_size=8",
         "--logging_steps=1", "--eval_strategy=no", "--save_total_limit=2"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A working directory laid out like the repo after `make demo-data demo-model`, but small."""
    root = tmp_path_factory.mktemp("workspace")
    write_demo_data(root / "data" / "demo", n_sft=48, n_prefs=48, n_heldout=4, n_test=8)
    texts = [line for f in (root / "data" / "demo").rglob("*.jsonl") for line in f.read_text().splitlines()]
    build_tiny_model("llama3", root / "outputs" / "tiny" / "base", texts, vocab_size=320, hidden_size=32)
    return root


def attempt(args, cwd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)


def run(args, cwd, timeout=300):
    result = attempt(args, cwd, timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def refused(args, cwd) -> str:
    """The one-message error of a script: exit status 2, no traceback; the message."""
    result = attempt(args, cwd)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stderr


def test_tiny_recipe_runs_sft_then_simpo(workspace):
    log = run([str(REPO / "scripts/train.py"), str(REPO / "recipes/tiny.yaml"), "--max_steps=3",
               "--save_strategy=no", *SMALL], cwd=workspace)
    assert "world size 1 × per-device batch 4 × gradient accumulation 2 = global batch 8" in log
    assert "objective simpo:" in log and "effective_gamma 1.25" in log
    # the first lines of each stage: one rendered example per split, the scored tokens marked
    assert log.count("example, train split (scored tokens in [[ ]]):") == 2  # SFT, then SimPO
    simpo_start = log.split("objective simpo:")[1]
    assert "    chosen   " in simpo_start and "    rejected " in simpo_start and "text '…" in simpo_start
    # the closing summary: each stage's time, final metrics and files
    summary = log[log.index("[tiny] done in"):]
    assert "  stage 1/2 (sft): " in summary and "  stage 2/2 (preference): " in summary
    assert "    model     outputs/tiny/simpo\n" in summary and "    train     loss " in summary
    assert "rewards/accuracies" in summary.split("stage 2/2")[1]
    sft, simpo = workspace / "outputs/tiny/sft", workspace / "outputs/tiny/simpo"
    # the SimPO stage started from the SFT stage's output
    assert yaml.safe_load((simpo / "run_config.yaml").read_text())["model_name_or_path"] == "outputs/tiny/sft"
    base_template = AutoTokenizer.from_pretrained(workspace / "outputs/tiny/base").chat_template
    for out in (sft, simpo):
        assert AutoTokenizer.from_pretrained(out).chat_template == base_template
        AutoModelForCausalLM.from_pretrained(out)
        assert (out / "training_curves.png").stat().st_size > 0
        card = ModelCard.load(out / "README.md")  # ours, not TRL's placeholder
        assert "simpo-recipes" in card.data.tags and "| global batch | 8 " in card.text
    assert "| objective | simpo: beta 2.5, gamma_beta_ratio 0.5" in (simpo / "README.md").read_text()
    metrics = read_metrics(simpo / "metrics.jsonl")
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "logps/rejected", "lengths/chosen", "lengths/rejected", "gamma", "logps/chosen_change",
                "logps/rejected_change"):
        assert key in metrics[0], key
    assert "loss" in read_metrics(sft / "metrics.jsonl")[0]


TINY_METHODS = {name: m.objective for name, m in load_recipe(REPO / "recipes/tiny.yaml").methods.items()}


@pytest.mark.slow
@pytest.mark.parametrize("objective", sorted(set(TINY_METHODS.values()) - {"simpo"}))
def test_every_objective_trains_two_steps_through_make_train(objective, workspace, tmp_path):
    """`make train MODEL=tiny OBJECTIVE=<method>` from the base model (FROM_SFT skips SFT), 2 optimizer steps."""
    out = tmp_path / objective
    args = [f"--dataset_mixer='{{{workspace / 'data/demo/prefs'}: 1.0}}'", f"--output_dir={out}", "--max_steps=2",
            "--save_strategy=no", "--eval_strategy=no", "--preprocessing_num_workers=1", *SMALL]
    result = run_make(REPO, "train", "MODEL=tiny", f"OBJECTIVE={objective}",
                      f"FROM_SFT={workspace / 'outputs/tiny/base'}", f"ARGS={' '.join(args)}", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"objective {objective}: {OBJECTIVES[objective].formula}" in result.stdout + result.stderr
    assert yaml.safe_load((out / "run_config.yaml").read_text())["objective"] == objective
    metrics = [m for m in read_metrics(out / "metrics.jsonl") if "loss" in m]
    assert [m["step"] for m in metrics] == [1, 2] and all(math.isfinite(m["loss"]) for m in metrics)
    assert (out / "reference_logps").is_dir() == OBJECTIVES[objective].needs_reference
    AutoModelForCausalLM.from_pretrained(out)


def simpo_command(output_dir):
    return [str(REPO / "scripts/run_simpo.py"), str(REPO / "training_configs/tiny-simpo.yaml"),
            "--model_name_or_path=outputs/tiny/base", f"--output_dir={output_dir}", "--max_steps=12",
            "--save_strategy=steps", "--save_steps=3", "--learning_rate=1e-3", *SMALL]


def test_rerun_after_kill_resumes_with_identical_losses(workspace, tmp_path):
    run(simpo_command(tmp_path / "straight"), cwd=workspace)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, *simpo_command(killed)], cwd=workspace, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (killed / "checkpoint-3" / "trainer_state.json").exists():
        assert process.poll() is None and time.monotonic() < deadline, "run ended before its first checkpoint"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists(), "the kill came too late to test anything"
    # what a kill during the next checkpoint's save and during a metrics write leave behind
    torn = shutil.copytree(killed / "checkpoint-3", killed / "checkpoint-9")
    (torn / "trainer_state.json").unlink()  # written last
    with (killed / "metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "loss": 0.6')
    log = run(simpo_command(killed), cwd=workspace)
    assert "removing " in log and "checkpoint-9: it is incomplete" in log
    assert "resuming from" in log and "checkpoint-3" in log and "leaving out its last line" in log
    straight, resumed = read_metrics(tmp_path / "straight/metrics.jsonl"), read_metrics(killed / "metrics.jsonl")
    steps = [m["step"] for m in resumed if "loss" in m]
    assert steps == list(range(1, 13)), "a logged step was lost or duplicated"
    for a, b in zip([m for m in straight if "loss" in m], [m for m in resumed if "loss" in m]):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6), a["step"]


def test_hub_model_offline_is_one_clear_error_in_seconds(workspace):
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(REPO / "scripts/run_simpo.py"),
                             str(REPO / "training_configs/tiny-simpo.yaml"),
                             "--model_name_or_path=meta-llama/Meta-Llama-3-8B-Instruct",
                             f"--output_dir={workspace / 'hub'}"], cwd=workspace, env=ENV, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and time.monotonic() - start < 60
    assert "error: model_name_or_path 'meta-llama/Meta-Llama-3-8B-Instruct' is not a local folder" in result.stderr
    assert "Traceback" not in result.stderr


def simpo_args(output_dir, *extra):
    return [str(REPO / "scripts/run_simpo.py"), str(REPO / "training_configs/tiny-simpo.yaml"),
            "--model_name_or_path=outputs/tiny/base", f"--output_dir={output_dir}", "--max_steps=4",
            "--save_strategy=steps", "--save_steps=2", *SMALL, *extra]


@pytest.mark.slow
def test_a_finished_stage_is_skipped_and_a_changed_one_is_refused(workspace, tmp_path):
    out = tmp_path / "simpo"
    run(simpo_args(out), cwd=workspace)
    # killed after its last checkpoint, before the final save: the rerun trains no step past max_steps
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps(record | {"finished": None}))
    (out / "model.safetensors").unlink()
    log = run(simpo_args(out), cwd=workspace)
    assert "no step left to train" in log and "'train_loss': '0" not in log
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4] and max(m["step"] for m in metrics) == 4
    assert sum("train_loss" in m for m in metrics) == 1

    def outputs():  # every file but the lock (which names its holder)
        return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".lock"}

    finished = outputs()
    log = run(simpo_args(out), cwd=workspace)  # the same command again: nothing changes
    assert "this stage finished on" in log and "skipping it" in log
    assert outputs() == finished

    message = refused(simpo_args(out, "--beta=10"), cwd=workspace)  # another run: refused, nothing touched
    assert "holds a different run than this command describes" in message and "  beta: 2.5 → 10.0" in message
    assert "--output_dir=NEW" in message and "--fresh_start" in message
    assert outputs() == finished

    run(simpo_args(out, "--beta=10", "--fresh_start", "--max_steps=2"), cwd=workspace)
    [aside] = tmp_path.glob("simpo.previous-*")
    assert yaml.safe_load((aside / "run_config.yaml").read_text())["beta"] == 2.5 and (aside / "checkpoint-4").is_dir()
    assert yaml.safe_load((out / "run_config.yaml").read_text())["beta"] == 10.0
    assert [m["step"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m] == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "simpo"])
def test_a_diverged_run_stops_at_once_and_saves_no_nan_model(workspace, tmp_path, stage):
    from safetensors.torch import load_file

    out = tmp_path / stage
    data = "data/demo/sft" if stage == "sft" else "data/demo/prefs"
    message = refused([str(REPO / f"scripts/run_{stage}.py"), str(REPO / f"training_configs/tiny-{stage}.yaml"),
                       "--model_name_or_path=outputs/tiny/base", f"--dataset_mixer={{{data}: 1.0}}",
                       f"--output_dir={out}", "--max_steps=8", "--learning_rate=1000", "--save_strategy=steps",
                       "--save_steps=1", *SMALL], cwd=workspace)
    assert "training diverged: optimizer step" in message and "last finite values logged (step" in message
    assert "lower learning_rate (now 1000)" in message
    assert not (out / "model.safetensors").exists()
    diverged_at = int(message.split("optimizer step ")[1].split()[0])
    saved = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert saved and max(saved) == diverged_at - 1
    for checkpoint in out.glob("checkpoint-*"):
        assert all(t.isfinite().all() for t in load_file(checkpoint / "model.safetensors").values())


def wait_for(condition, process, what, timeout=240):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, f"ended before {what}"
        time.sleep(0.05)


def lock_is_free(folder) -> bool:
    with open(folder / ".lock") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


@pytest.mark.slow
def test_one_run_per_folder_and_signals_stop_cleanly(workspace, tmp_path):
    out = tmp_path / "busy"
    first = subprocess.Popen([sys.executable, *simpo_args(out, "--max_steps=400", "--learning_rate=1e-4")],
                             cwd=workspace, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (out / "checkpoint-2" / "trainer_state.json").exists(), first, "its first checkpoint")
    message = refused(simpo_args(out, "--max_steps=400", "--learning_rate=1e-4"), cwd=workspace)
    assert f"is in use by another run (pid {first.pid} on" in message
    first.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    assert "interrupted (Ctrl-C); rerun the same command to resume from" in stderr and lock_is_free(out)

    # SIGTERM to scripts/train.py reaches its stage, which stops; nothing is left running
    sft = tmp_path / "sft"
    train = subprocess.Popen([sys.executable, str(REPO / "scripts/train.py"), str(REPO / "recipes/tiny.yaml"),
                              "--max_steps=400", f"--sft.output_dir={sft}", f"--preference.output_dir={tmp_path / 's'}",
                              *SMALL], cwd=workspace, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    wait_for(lambda: (sft / "metrics.jsonl").exists() and not lock_is_free(sft), train, "its first stage trains")
    stage_pid = int((sft / ".lock").read_text().split()[1])
    train.send_signal(signal.SIGTERM)
    _, stderr = train.communicate(timeout=120)
    assert train.returncode == 143 and "stage 1/2 (sft) stopped by SIGTERM" in stderr, stderr[-3000:]
    assert "stopped by SIGTERM;" in stderr and lock_is_free(sft)
    with pytest.raises(ProcessLookupError):
        os.kill(stage_pid, 0)
