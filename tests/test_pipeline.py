"""End to end through the real scripts: the tiny recipe's stages, outputs, and resume after kill -9."""
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_make
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


def run(args, cwd, timeout=300):
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def test_tiny_recipe_runs_sft_then_simpo(workspace):
    log = run([str(REPO / "scripts/train.py"), str(REPO / "recipes/tiny.yaml"), "--max_steps=3",
               "--save_strategy=no", *SMALL], cwd=workspace)
    assert "world size 1 × per-device batch 4 × gradient accumulation 2 = global batch 8" in log
    assert "objective simpo:" in log and "effective_gamma 1.25" in log
    sft, simpo = workspace / "outputs/tiny/sft", workspace / "outputs/tiny/simpo"
    # the SimPO stage started from the SFT stage's output
    assert yaml.safe_load((simpo / "run_config.yaml").read_text())["model_name_or_path"] == "outputs/tiny/sft"
    base_template = AutoTokenizer.from_pretrained(workspace / "outputs/tiny/base").chat_template
    for out in (sft, simpo):
        assert AutoTokenizer.from_pretrained(out).chat_template == base_template
        AutoModelForCausalLM.from_pretrained(out)
        assert (out / "training_curves.png").stat().st_size > 0
    metrics = read_metrics(simpo / "metrics.jsonl")
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "logps/rejected", "lengths/chosen", "lengths/rejected", "gamma"):
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
    log = run(simpo_command(killed), cwd=workspace)
    assert "resuming from" in log
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
