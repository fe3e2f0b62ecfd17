"""LoRA in both stages: SFT trains adapters and saves them merged; SimPO starts from that model,
trains its own adapters, and its output loads as a plain model."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
LORA = ["--use_peft=true", "--lora_r=4", "--lora_alpha=8", "--max_steps=2", "--per_device_train_batch_size=2",
        "--total_batch_size=2", "--eval_strategy=no", "--save_strategy=no", "--use_cpu=true"]


def stage(name, config, *args, cwd):
    result = subprocess.run([sys.executable, str(REPO / f"scripts/run_{name}.py"), str(REPO / config), *args, *LORA],
                            cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_lora_sft_then_lora_simpo(family_workspace, tmp_path):
    base = family_workspace / "models/llama3"
    log = stage("sft", "training_configs/tiny-sft.yaml", f"--model_name_or_path={base}", "--learning_rate=1e-2",
                f"--dataset_mixer={{{family_workspace / 'data/ultrachat'}: 1.0}}", "--dataset_splits=[train_sft]",
                f"--output_dir={tmp_path / 'sft'}", cwd=tmp_path)
    assert "LoRA:" in log and "parameters trainable" in log and "merged the LoRA adapter" in log
    assert (tmp_path / "sft/adapter/adapter_config.json").exists()
    assert not (tmp_path / "sft/adapter_config.json").exists()  # the output folder holds a plain model
    stage("simpo", "training_configs/tiny-simpo.yaml", f"--model_name_or_path={tmp_path / 'sft'}",
          f"--dataset_mixer={{{family_workspace / 'data/on_policy'}: 1.0}}", "--dataset_splits=[train]",
          f"--output_dir={tmp_path / 'simpo'}", cwd=tmp_path)
    weights = {}
    for name, folder in (("base", base), ("sft", tmp_path / "sft"), ("simpo", tmp_path / "simpo")):
        weights[name] = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    changed = [k for k in weights["base"] if not torch.equal(weights["base"][k], weights["sft"][k])]
    assert changed and all("proj" in k for k in changed)  # only the adapted linear layers moved
    assert any(not torch.equal(weights["sft"][k], weights["simpo"][k]) for k in changed)
