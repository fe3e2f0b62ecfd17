"""Two processes on CPU: DDP and DeepSpeed ZeRO-2 / ZeRO-3 (gloo) through the repository's accelerate
configs keep the global batch of a one-process run and log metrics gathered over both ranks — for
SimPO and for DPO, whose cached reference pass runs under the same launch — on the fast path
(chunked head, packing, prefix sharing; under ZeRO-3 too) with the same numbers as the plain path;
FSDP, which accelerate would silently turn into DDP on CPU, stops with an error."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from simpo_recipes.config.arguments import stage_types
from simpo_recipes.config.parsing import build
from simpo_recipes.data.preprocess import prepare_preferences
from simpo_recipes.errors import ConfigError
from simpo_recipes.training.reporting import read_metrics
from simpo_recipes.training.runtime import announce

REPO = Path(__file__).resolve().parents[1]
# DeepSpeed JIT-compiles its CPU communication op once (~45 s) into this gitignored folder
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                    "TORCH_EXTENSIONS_DIR": str(REPO / ".cache/torch_extensions")}
PAIRS = 8  # one optimizer step takes every pair, so every run sees the same pairs whatever the sharding
PLAIN = ["--lm_head_chunk_size=0", "--padding_free=false", "--prefix_sharing=false"]  # full logits, padded


@pytest.fixture(scope="module")
def eight_pairs(family_workspace, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eight_pairs")
    rows = (family_workspace / "data/on_policy/train.jsonl").read_text().splitlines()[:PAIRS]
    (folder / "train.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def preference(launcher, output_dir, model, data, objective, extra=()):
    command = [*launcher, str(REPO / "scripts/run_preference.py"), str(REPO / "training_configs/tiny-simpo.yaml"),
               f"--objective={objective}",
               f"--model_name_or_path={model}", f"--dataset_mixer={{{data}: 1.0}}", "--dataset_splits=[train]",
               f"--output_dir={output_dir}", "--per_device_train_batch_size=2", f"--total_batch_size={PAIRS}",
               "--num_train_epochs=1", "--logging_steps=1", "--save_strategy=no", "--eval_strategy=no",
               "--use_cpu=true", *extra]
    result = subprocess.run([sys.executable, *command], env=ENV, capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


def accelerate(config, *flags):
    return ["-m", "accelerate.commands.launch", "--config_file", str(REPO / "accelerate_configs" / config),
            "--num_processes", "2", *flags]


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["simpo", "dpo"])
def test_two_processes_keep_the_global_batch_and_gather_metrics(objective, family_workspace, eight_pairs, tmp_path):
    model = family_workspace / "models/llama3"
    zero3 = accelerate("deepspeed_zero3.yaml", "--mixed_precision", "no")
    # name: (launcher, extra arguments); the paper recipes' ZeRO-3 runs checkpoint activations
    runs = {"one process": ([], []), "ZeRO-3": (zero3, ["--activation_checkpointing=true"])}
    if objective == "simpo":  # ZeRO-3's fast path against its plain path; DDP
        runs |= {"ZeRO-3, plain path": (zero3, PLAIN), "DDP": (accelerate("multi_gpu.yaml", "--mixed_precision", "no"), [])}
    else:  # the live reference too: a frozen copy sharded by ZeRO-3 like the policy; ZeRO-2
        runs |= {"ZeRO-3, live reference": (zero3, ["--reference_logps=live"]),
                 "ZeRO-2": (accelerate("deepspeed_zero2.yaml", "--mixed_precision", "no"), [])}
    logged = {}
    for name, (launcher, extra) in runs.items():
        folder = tmp_path / name.replace(" ", "_").replace(",", "")
        code, log = preference(launcher, folder, model, eight_pairs, objective, extra)
        assert code == 0, f"{name}:\n{log[-4000:]}"
        world, accumulation = (1, 4) if name == "one process" else (2, 2)
        batch = f"world size {world} × per-device batch 2 × gradient accumulation {accumulation} = global batch 8"
        assert batch in log
        assert " off, " not in log, f"{name}: a fast-path part switched itself off:\n{log[-4000:]}"
        [logged[name]] = [m for m in read_metrics(folder / "metrics.jsonl") if "loss" in m]
        assert (folder / "reference_logps").exists() == (objective == "dpo" and "live" not in name), name
    # the logged per-pair means are over all 8 pairs, not over rank 0's 4
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = [json.loads(line) for line in (eight_pairs / "train.jsonl").read_text().splitlines()]
    pairs = prepare_preferences(Dataset.from_list(rows), tokenizer, 128, 96, 0.0, name="pairs")
    lengths = [len(ids) for ids in pairs["chosen_input_ids"]]
    assert len(lengths) == PAIRS and len(set(lengths)) > 1
    one = logged["one process"]
    compared = [k for k, v in one.items() if isinstance(v, float) and k not in ("epoch", "learning_rate")]
    assert {"loss", "grad_norm", "rewards/margins", "logps/chosen", "lengths/rejected"} <= set(compared)
    for name, metrics in logged.items():
        assert metrics["step"] == 1, name  # one optimizer step of 8 pairs
        assert metrics["lengths/chosen"] == pytest.approx(sum(lengths) / PAIRS), name
        # same starting weights, same 8 pairs: every logged number equal up to float summation order
        for key in compared:
            assert metrics[key] == pytest.approx(one[key], rel=1e-4, abs=1e-5), (name, key)
        if objective == "dpo":  # the cached pass scored the starting model row by row in order: log-ratios 0
            assert metrics["loss"] == pytest.approx(math.log(2), abs=1e-5), name
            assert metrics["rewards/chosen"] == pytest.approx(0.0, abs=1e-5), name


def test_fsdp_on_cpu_is_an_error_not_silent_ddp(tmp_path, monkeypatch):
    """accelerate marks an FSDP launch in the environment, and the training scripts refuse it on CPU
    before loading anything (announce() is the first thing both scripts do after parsing)."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nprint('ACCELERATE_USE_FSDP=' + os.environ.get('ACCELERATE_USE_FSDP', ''))\n")
    result = subprocess.run([sys.executable, *accelerate("fsdp.yaml", "--mixed_precision", "no"), str(probe)],
                            env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ACCELERATE_USE_FSDP=true" in result.stdout, result.stderr[-2000:]
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    args = build({"model_name_or_path": "m", "dataset_mixer": {"d": 1.0}, "output_dir": str(tmp_path / "o"),
                  "use_cpu": True}, stage_types("preference"), "fsdp.yaml")
    with pytest.raises(ConfigError, match="FSDP needs GPUs; on CPU accelerate would silently run plain DDP"):
        announce(args, args[2])
    assert not (tmp_path / "o").exists()
