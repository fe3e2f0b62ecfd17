"""report_to: a tiny SimPO run logs offline to TensorBoard and to Weights & Biases; an integration that
cannot log is a clear error before any model loads."""
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from simpo_recipes.errors import ConfigError
from simpo_recipes.training.reporting import read_metrics
from simpo_recipes.training.tracking import check_report_to

REPO = Path(__file__).resolve().parents[1]


def run_simpo(workspace: Path, out: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts/run_simpo.py"), str(REPO / "training_configs/tiny-simpo.yaml"),
         f"--model_name_or_path={workspace / 'models/llama3'}",
         f"--dataset_mixer={{{workspace / 'data/on_policy'}: 1}}",
         f"--output_dir={out}", "--max_steps=2", "--logging_steps=1", "--per_device_train_batch_size=4",
         "--total_batch_size=4", "--eval_strategy=no", "--save_strategy=no", "--use_cpu=true", *extra],
        env=os.environ | {"OMP_NUM_THREADS": "1"} | env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_tiny_run_logs_offline_to_tensorboard_and_wandb(family_workspace, tmp_path):
    out = tmp_path / "out"
    result = run_simpo(family_workspace, out, {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
                                               "WANDB_PROJECT": "simpo-test"}, "--report_to=[tensorboard, wandb]")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    losses = {m["step"]: m["loss"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m}
    assert sorted(losses) == [1, 2]
    [events] = (out / "runs").iterdir()
    tensorboard = EventAccumulator(str(events))
    tensorboard.Reload()
    assert {"train/rewards/accuracies", "train/logps/chosen", "train/logps/rejected"} <= set(
        tensorboard.Tags()["scalars"])
    assert {e.step: e.value for e in tensorboard.Scalars("train/loss")} == pytest.approx(losses, rel=1e-6)
    [run_file] = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    logged = run_file.read_bytes()  # the offline run's records hold each logged value as JSON
    assert b"train/rewards/accuracies" in logged and b"train/logps/chosen" in logged
    assert all(json.dumps(loss).encode() in logged for loss in losses.values())


def test_what_cannot_log_stops_before_any_model_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    with pytest.raises(ConfigError, match=r"wandb has no API key: set WANDB_API_KEY.*WANDB_MODE=offline"):
        check_report_to(["wandb"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_report_to(["wandb", "tensorboard"])
    with pytest.raises(ConfigError, match="'tensorbord' is not an integration transformers knows"):
        check_report_to(["tensorbord"])
    # a known integration whose package is missing, through make plan / make train (scripts/train.py)
    monkeypatch.setattr(sys, "argv", ["train.py", str(REPO / "recipes/tiny.yaml"), "--plan", "--report_to=comet_ml"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(REPO / "scripts/train.py"), run_name="__main__")
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("error: report_to: comet_ml is not installed: install comet_ml's package")
