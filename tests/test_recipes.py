"""The six paper recipes hold the paper's settings and methods; launching, planning and overriding them."""
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from simpo_recipes.config.arguments import stage_types
from simpo_recipes.config.parsing import build, parse_config
from simpo_recipes.errors import ConfigError
from simpo_recipes.objectives import OBJECTIVES
from simpo_recipes.pipeline.launch import detect_topology
from simpo_recipes.pipeline.recipes import load_recipe, stage_commands
from simpo_recipes.training.lora import check_quantization

REPO = Path(__file__).resolve().parents[1]
CPU = [] if torch.cuda.is_available() else ["--use_cpu=true"]
UF = "HuggingFaceH4/ultrafeedback_binarized"
# name: (starting model, stages, SimPO data, splits, lr, beta, gamma/beta, max_length, max_prompt_length)
PAPER = {
    "mistral-base": ("mistralai/Mistral-7B-v0.1", ["sft", "preference"], UF, "prefs", 3e-7, 2.0, 0.8, 1024, 512),
    "mistral-instruct": ("mistralai/Mistral-7B-Instruct-v0.2", ["preference"],
                         "princeton-nlp/mistral-instruct-ultrafeedback", "", 5e-7, 2.5, 0.1, 2048, 1800),
    "llama3-base": ("meta-llama/Meta-Llama-3-8B", ["sft", "preference"], UF, "prefs", 6e-7, 2.0, 0.5, 2048, 1800),
    "llama3-instruct": ("meta-llama/Meta-Llama-3-8B-Instruct", ["preference"], "princeton-nlp/llama3-ultrafeedback",
                        "", 1e-6, 2.5, 0.55, 2048, 1800),
    "llama3-instruct-v0.2": ("meta-llama/Meta-Llama-3-8B-Instruct", ["preference"],
                             "princeton-nlp/llama3-ultrafeedback-armorm", "", 1e-6, 10.0, 0.3, 2048, 1800),
    "gemma2-9b-it": ("google/gemma-2-9b-it", ["preference"], "princeton-nlp/gemma2-ultrafeedback-armorm", "",
                     8e-7, 10.0, 0.5, 2048, 1800),
}
# (AlpacaEval 2 LC, WR, Arena-Hard WR, MT-Bench); (temperature, max_new_tokens, stop)
RESULTS = {"mistral-base": (21.5, 20.8, 16.6, 6.0), "mistral-instruct": (32.1, 34.8, 21.0, 6.6),
           "llama3-base": (22.0, 20.3, 23.4, 7.7), "llama3-instruct": (44.7, 40.5, 33.8, 8.0),
           "llama3-instruct-v0.2": (53.7, 47.5, 36.5, None), "gemma2-9b-it": (72.4, 65.9, 59.1, None)}
LLAMA3_DECODING = (0.9, 4096, ["<|end_of_text|>", "<|eot_id|>"])
DECODING = {"mistral-base": (0.7, 2048, ["</s>"]), "mistral-instruct": (0.5, 2048, ["</s>"]),
            "llama3-base": LLAMA3_DECODING, "llama3-instruct": LLAMA3_DECODING,
            "llama3-instruct-v0.2": LLAMA3_DECODING, "gemma2-9b-it": (0.5, 4096, ["<eos>", "<end_of_turn>"])}
PUBLISHED_SFT = {"mistral-base": "alignment-handbook/zephyr-7b-sft-full",
                 "llama3-base": "princeton-nlp/Llama-3-Base-8B-SFT"}


def resolved(recipe):
    """Each stage's built configs, as scripts/train.py validates them."""
    return {stage.stage: parse_config(stage.stage, [config, *overrides, *CPU])
            for stage, (_, config, *overrides) in stage_commands(recipe)}


@pytest.mark.parametrize("name", PAPER)
def test_recipe_matches_the_paper(name):
    model, stages, data, split, lr, beta, ratio, max_length, max_prompt = PAPER[name]
    recipe = load_recipe(REPO / f"recipes/{name}.yaml")
    assert [s.stage for s in recipe.stages] == stages and recipe.published_sft == PUBLISHED_SFT.get(name)
    assert Path(recipe.accelerate_config).name == "deepspeed_zero3.yaml"
    configs = resolved(recipe)
    model_args, data_args, args, _, simpo = configs["preference"]
    assert data_args.dataset_mixer == {data: 1.0}
    assert data_args.dataset_splits == [f"train_{split}" if split else "train", f"test_{split}" if split else "test"]
    assert simpo.name == "simpo" and (args.learning_rate, simpo.beta, simpo.gamma_beta_ratio, simpo.gamma) == (
        lr, beta, ratio, None)
    assert (args.max_length, args.max_prompt_length, simpo.loss_type, simpo.sft_weight) == (max_length, max_prompt,
                                                                                           "sigmoid", 0.0)
    assert model_args.attn_implementation == ("eager" if name.startswith("gemma2") else "sdpa")
    if "sft" in configs:
        sft_model, sft_data, sft_args, _ = configs["sft"]
        assert sft_model.model_name_or_path == model and sft_data.chat_template == data_args.chat_template
        assert sft_data.dataset_mixer == {"HuggingFaceH4/ultrachat_200k": 1.0}
        assert sft_data.dataset_splits == ["train_sft", "test_sft"]
        assert (sft_args.learning_rate, sft_args.max_length, sft_args.per_device_train_batch_size) == (2e-5, 2048, 8)
    else:
        assert model_args.model_name_or_path == model
    for _, _, stage_args, *_ in configs.values():  # shared by every stage of the paper
        assert stage_args.total_batch_size == 128 and stage_args.num_train_epochs == 1
        assert stage_args.lr_scheduler_type == "cosine" and stage_args.warmup_steps == 0.1
        assert stage_args.optim == "adamw_torch" and stage_args.bf16 and stage_args.activation_checkpointing
        assert stage_args.seed == 42 and stage_args.report_to == []
    results = recipe.paper_results
    assert (results.alpaca_eval_lc, results.alpaca_eval_wr, results.arena_hard_wr, results.mt_bench) == RESULTS[name]
    generation = recipe.generation
    assert (generation.temperature, generation.top_p, generation.max_new_tokens, generation.stop) == (
        DECODING[name][0], 1.0, *DECODING[name][1:])
    assert recipe.hardware.gpus >= 1 and recipe.hardware.gpu_memory_gb >= 40


def test_per_stage_overrides_and_starting_from_a_published_sft():
    recipe = load_recipe(REPO / "recipes/llama3-base.yaml")
    (_, sft), (_, simpo) = stage_commands(recipe, ["--sft.model_name_or_path=m", "--max_steps", "2",
                                                   "--preference.output_dir=o"])
    assert "--model_name_or_path=m" in sft and "--max_steps=2" in sft and "--output_dir=o" not in sft
    assert "--model_name_or_path=outputs/llama3-base/sft" in simpo and "--output_dir=o" in simpo
    [(stage, command)] = stage_commands(recipe, [], from_sft="published")
    assert stage.stage == "preference" and command[-1] == "--model_name_or_path=princeton-nlp/Llama-3-Base-8B-SFT"
    assert stage_commands(recipe, [], from_sft="my/sft")[0][1][-1] == "--model_name_or_path=my/sft"
    with pytest.raises(ConfigError, match="has no 'dpo' stage"):
        stage_commands(recipe, ["--dpo.beta=0.1"])
    with pytest.raises(ConfigError, match="names no published_sft"):
        stage_commands(load_recipe(REPO / "recipes/tiny.yaml"), [], from_sft="published")


# Published values (PAPER.md): DPO β 0.01 and its learning rate per setting; Llama-3-Base IPO, ORPO, R-DPO.
DPO_LR = {"mistral-base": 5e-7, "mistral-instruct": 5e-7, "llama3-base": 5e-7, "llama3-instruct": 7e-7,
          "llama3-instruct-v0.2": 3e-7, "gemma2-9b-it": 5e-7}
LLAMA3_BASE = {"ipo": ({"tau": 0.1}, 5e-7), "orpo": ({"odds_ratio_weight": 2.0}, 7e-7), "rdpo": ({"alpha": 0.05}, 5e-7)}


@pytest.mark.parametrize("name", PAPER)
def test_every_paper_recipe_runs_every_method_with_the_published_values_or_says_so(name):
    recipe = load_recipe(REPO / f"recipes/{name}.yaml")
    assert {m.objective for m in recipe.methods.values()} == set(OBJECTIVES)
    assert {"simpo-no-ln", "simpo-gamma0"} <= set(recipe.methods)
    for method_name, method in recipe.methods.items():
        *_, (_, (_, config, *overrides)) = stage_commands(recipe, method=method_name)
        _, _, args, _, objective = parse_config("preference", [config, *overrides, *CPU])
        assert args.output_dir == f"outputs/{name}/{method_name}"
        published = method.source.startswith("published")
        assert published or "not the paper's tuned value" in method.source or "ablation" in method.source \
            or "no hyperparameters" in method.source, (name, method_name, method.source)
        if method_name == "dpo":
            assert published and (objective.beta, args.learning_rate) == (0.01, DPO_LR[name])
        if name == "llama3-base" and method_name in LLAMA3_BASE:
            values, lr = LLAMA3_BASE[method_name]
            assert published or "published" in method.source
            assert all(getattr(objective, k) == v for k, v in values.items()) and args.learning_rate == lr
    ablation = parse_config("preference", [*stage_commands(recipe, method="simpo-no-ln")[-1][1][1:], *CPU])[4]
    assert ablation.length_normalization is False and ablation.beta == PAPER[name][5]


def test_make_plan_of_a_baseline_shows_its_hyperparameters(make):
    out = make("plan", "MODEL=llama3-base", "OBJECTIVE=ipo")
    assert "objective:       ipo" in out and "tau 0.1" in out and "learning_rate 5e-07" in out
    assert "output:          outputs/llama3-base/ipo" in out and "values: published" in out
    assert "the file's simpo hyperparameters beta, gamma_beta_ratio, loss_type are not used" in out


def test_topology_counts_gpus_and_refuses_what_would_silently_misbehave():
    config = str(REPO / "accelerate_configs/deepspeed_zero3.yaml")
    assert detect_topology(config, None, gpus=8).num_processes == 8
    assert detect_topology(config, 2, gpus=8).num_processes == 2
    two_cpus = detect_topology(config, 2, gpus=0)
    assert two_cpus.num_processes == 2 and two_cpus.use_cpu
    with pytest.raises(ConfigError, match="no GPU found"):
        detect_topology(config, None, gpus=0)
    with pytest.raises(ConfigError, match="FSDP needs GPUs"):
        detect_topology(str(REPO / "accelerate_configs/fsdp.yaml"), 2, gpus=0)
    with pytest.raises(ConfigError, match="single process"):
        detect_topology(str(REPO / "accelerate_configs/cpu.yaml"), 2, gpus=0)


def test_lora_keys_and_qlora_needs_a_gpu_and_bitsandbytes():
    base = {"model_name_or_path": "m", "dataset_mixer": {"d": 1.0}, "output_dir": "o", "use_cpu": True}
    lora = build(base | {"use_peft": True, "lora_r": 8, "lora_target_modules": ["q_proj"]},
                 stage_types("preference"), "lora.yaml")[3]
    assert lora.use_peft and lora.lora_r == 8 and lora.lora_target_modules == ["q_proj"]
    with pytest.raises(ConfigError, match="set use_peft: true"):
        build(base | {"load_in_4bit": True}, stage_types("sft"), "q.yaml")
    qlora = build(base | {"use_peft": True, "load_in_4bit": True}, stage_types("sft"), "q.yaml")[3]
    with pytest.raises(ConfigError, match=r"QLoRA\) needs a CUDA GPU"):
        check_quantization(qlora, use_cpu=True)


def test_make_plan_keeps_the_global_batch_on_any_gpu_count(make):
    out = make("plan", "MODEL=llama3-base", "NUM_GPUS=8")
    assert "8 process(es)" in out and "stage 1/2 (sft)" in out and "stage 2/2 (preference)" in out
    assert "world size 8 × per-device batch 8 × gradient accumulation 2 = global batch 128" in out  # SFT
    assert "world size 8 × per-device batch 2 × gradient accumulation 8 = global batch 128" in out  # SimPO
    assert "objective:       simpo" in out and "beta 2, gamma_beta_ratio 0.5" in out and "effective_gamma 1" in out
    assert "learning_rate 6e-07" in out
    assert "model:           outputs/llama3-base/sft" in out and "steps per epoch: counted at run time" in out
    assert "--num_processes 8 --mixed_precision bf16" in out



def plan(capsys, monkeypatch, *argv):
    """What `make plan` runs (scripts/train.py --plan), in this process: the imports are paid already."""
    monkeypatch.setattr(sys, "argv", ["train.py", *argv, "--plan"])
    runpy.run_path(str(REPO / "scripts/train.py"), run_name="__main__")
    return capsys.readouterr().out


def test_plan_from_the_published_sft(capsys, monkeypatch):
    """make plan MODEL=mistral-base FROM_SFT=published"""
    published = plan(capsys, monkeypatch, str(REPO / "recipes/mistral-base.yaml"), "--from_sft", "published")
    assert "(sft)" not in published and "model:           alignment-handbook/zephyr-7b-sft-full" in published
    assert "global batch 128" in published and "beta 2, gamma_beta_ratio 0.8" in published
    assert "effective_gamma 1.6" in published


def test_slurm_launcher_spans_nodes_with_the_same_global_batch(tmp_path):
    """Two nodes × 8 GPUs: one train.py per node, world size 16, accumulation 4 (stand-in srun/scontrol)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf 'gpu-node-a\\ngpu-node-b\\n'\n")
    # run the task of the second node only: what matters is what each node is told
    (bin_dir / "srun").write_text("#!/bin/sh\nshift\nSLURM_NODEID=1 exec \"$@\"\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = os.environ | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_NNODES": "2", "GPUS_PER_NODE": "8",
                        "SLURM_JOB_NODELIST": "gpu-node-[a-b]", "PYTHON": sys.executable}
    result = subprocess.run(["bash", "scripts/slurm_train.sh", "llama3-instruct", "--plan"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "world size 16 × per-device batch 2 × gradient accumulation 4 = global batch 128" in result.stdout
    assert ("--num_processes 16 --mixed_precision bf16 --num_machines 2 --machine_rank 1 "
            "--main_process_ip gpu-node-a --main_process_port 29500") in result.stdout


def test_readme_recipe_table_matches_the_recipes():
    rows = [line.split("|")[1:-1] for line in (REPO / "README.md").read_text().splitlines()
            if line.startswith("| `") and line.count("|") == 11]
    assert [row[0].strip(" `") for row in rows] == list(PAPER)
    for row in rows:
        name = row[0].strip(" `")
        lr, beta, ratio, max_length, max_prompt = PAPER[name][4:]
        assert [float(row[i]) for i in (4, 5, 6)] == [lr, beta, ratio], name
        assert row[7].strip() == f"{max_length} / {max_prompt}", name
        assert row[9].strip() == " / ".join("–" if v is None else f"{v:.1f}" for v in RESULTS[name]), name


def test_add_your_own_recipe_then_plan(family_workspace, tmp_path, monkeypatch, capsys):
    """README 'Add your own recipe': copy, change model, data and the SimPO knobs, `make plan`."""
    for folder, name in (("recipes", "llama3-instruct.yaml"), ("training_configs", "llama3-instruct-simpo.yaml"),
                         ("accelerate_configs", "deepspeed_zero3.yaml")):
        (tmp_path / folder).mkdir()
        text = (REPO / folder / name).read_text().replace("llama3-instruct", "my-model")
        (tmp_path / folder / name.replace("llama3-instruct", "my-model")).write_text(text)
    config = tmp_path / "training_configs/my-model-simpo.yaml"
    text = config.read_text().replace("meta-llama/Meta-Llama-3-8B-Instruct", str(family_workspace / "models/llama3"))
    text = text.replace("princeton-nlp/llama3-ultrafeedback", str(family_workspace / "data/on_policy"))
    text = text.replace("beta: 2.5", "beta: 4.0").replace("gamma_beta_ratio: 0.55", "gamma_beta_ratio: 0.25")
    config.write_text(text)
    out = plan(capsys, monkeypatch, str(tmp_path / "recipes/my-model.yaml"), "--num_processes", "2")
    assert f"model:           {family_workspace / 'models/llama3'}" in out
    assert "beta 4, gamma_beta_ratio 0.25" in out and "effective_gamma 1" in out
    assert "world size 2 × per-device batch 2 × gradient accumulation 32 = global batch 128" in out
    assert "steps per epoch: 1 (16 local train rows before length checks)" in out
