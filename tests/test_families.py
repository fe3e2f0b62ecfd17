"""Every stage of each family's real recipe, one of its reference-needing methods (cached reference
pass), and a reference-repository config, run 2 optimizer steps on tiny random models of the same
architecture through the real scripts.

Overridden on the command line, and nothing else: the model, the data folders, the output folders
and sizes (max_steps, per-device batch, total batch, tokenization workers); `make train` picks the
one-process CPU topology (ACCELERATE_CONFIG=) and adds --use_cpu=true on a machine without GPUs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from simpo_recipes.config.parsing import read_yaml
from simpo_recipes.training.reporting import read_metrics

REPO = Path(__file__).resolve().parents[1]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                    "TORCH_EXTENSIONS_DIR": str(REPO / ".cache/torch_extensions")}
SIZES = ["--max_steps=2", "--per_device_train_batch_size=2", "--per_device_eval_batch_size=2",
         "--total_batch_size=4", "--preprocessing_num_workers=1"]
FAMILIES = {  # family: (recipe, its stages' data folders in the workspace)
    "llama3": ("llama3-base", {"sft": "ultrachat", "preference": "ultrafeedback"}),
    "mistral": ("mistral-base", {"sft": "ultrachat", "preference": "ultrafeedback"}),
    "gemma2": ("gemma2-9b-it", {"preference": "on_policy"}),
}
REFERENCE_METHOD = {"llama3": "kto", "mistral": "dpo", "gemma2": "ipo"}


def run(args, cwd, timeout=600):
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_stage_of_the_family_recipe_trains_two_steps(family, family_workspace, tmp_path, make):
    recipe, data = FAMILIES[family]
    first = next(iter(data))
    overrides = [f"--{first}.model_name_or_path={family_workspace / 'models' / family}"]
    for stage, folder in data.items():
        overrides += [f"--{stage}.dataset_mixer='{{{family_workspace / 'data' / folder}: 1.0}}'",
                      f"--{stage}.output_dir={tmp_path / stage}"]
    log = make("train", f"MODEL={recipe}", "ACCELERATE_CONFIG=accelerate_configs/cpu.yaml",
               f"ARGS={' '.join(overrides + SIZES)}")
    assert log.count("world size 1 × per-device batch 2 × gradient accumulation 2 = global batch 4") == len(data)
    previous = None
    for stage in data:
        out = tmp_path / stage
        config = read_yaml(REPO / f"training_configs/{recipe}-{'sft' if stage == 'sft' else 'simpo'}.yaml")
        run_config = yaml.safe_load((out / "run_config.yaml").read_text())
        assert run_config["bf16"] and run_config["learning_rate"] == float(config["learning_rate"])
        assert run_config["attn_implementation"] == config["attn_implementation"]
        if previous:  # SimPO started from this recipe's SFT output
            assert run_config["model_name_or_path"] == str(tmp_path / previous)
        assert [m["step"] for m in read_metrics(out / "metrics.jsonl")][-1] == 2  # two optimizer steps
        tokenizer = AutoTokenizer.from_pretrained(out)
        # the config's chat template (Zephyr's on Mistral-7B-v0.1, Llama-3's on the base model) was trained and saved
        assert tokenizer.chat_template == config.get("chat_template", tokenizer.chat_template)
        AutoModelForCausalLM.from_pretrained(out)
        previous = stage


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_a_reference_method_of_the_family_recipe_trains_with_the_cached_reference(family, family_workspace,
                                                                                 tmp_path, make):
    recipe, data = FAMILIES[family]
    method = REFERENCE_METHOD[family]
    out = tmp_path / method
    overrides = [f"--dataset_mixer='{{{family_workspace / 'data' / data['preference']}: 1.0}}'", f"--output_dir={out}"]
    log = make("train", f"MODEL={recipe}", f"OBJECTIVE={method}", f"FROM_SFT={family_workspace / 'models' / family}",
               "ACCELERATE_CONFIG=accelerate_configs/cpu.yaml", f"ARGS={' '.join(overrides + SIZES)}")
    assert f"objective {method}:" in log and "reference log-probs: 16 of 16 rows to score" in log
    run_config = yaml.safe_load((out / "run_config.yaml").read_text())
    assert run_config["objective"] == method and run_config["reference_logps"] == "cached"
    assert len(list((out / "reference_logps").glob("train-*/rows-*.safetensors"))) == 1
    metrics = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics][-1] == 2 and "rewards/margins" in metrics[0]
    AutoModelForCausalLM.from_pretrained(out)


@pytest.mark.slow
def test_reference_repo_config_trains_unchanged(family_workspace, tmp_path):
    """princeton-nlp/SimPO's llama-3-8b-instruct-simpo.yaml, as published. Beyond model, data,
    output and sizes, three settings are this machine's, not the recipe's: no flash-attn
    (attn_implementation=sdpa), no wandb (report_to=none) and no GPU (use_cpu=true)."""
    config = REPO / "tests/fixtures/reference_configs/llama-3-8b-instruct-simpo.yaml"
    log = run([str(REPO / "scripts/run_simpo.py"), str(config),
               f"--model_name_or_path={family_workspace / 'models/llama3'}",
               f"--dataset_mixer={{{family_workspace / 'data/on_policy'}: 1.0}}", f"--output_dir={tmp_path / 'out'}",
               "--max_steps=2", "--gradient_accumulation_steps=2", "--preprocessing_num_workers=1",
               "--attn_implementation=sdpa", "--report_to=none", "--use_cpu=true"], cwd=tmp_path)
    for old in ("torch_dtype", "evaluation_strategy", "warmup_ratio"):
        assert f"{old!r} is deprecated" in log
    assert "world size 1 × per-device batch 2 × gradient accumulation 2 = global batch 4" in log
    assert "objective simpo:" in log and "effective_gamma 1.375" in log
    state = json.loads((tmp_path / "out/checkpoint-2/trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["max_steps"] == 2
