#!/usr/bin/env python
"""`make train MODEL=<name>` / `make plan MODEL=<name>`: run, or only describe, every stage of
recipes/<name>.yaml in order, each launched with `accelerate launch` over every GPU found and
starting from the previous stage's output.

    python scripts/train.py recipes/llama3-base.yaml [--plan] [--num_processes N] [--objective METHOD]
        [--accelerate_config PATH] [--from_sft published|MODEL] [--key=value] [--<stage>.key=value]

--objective runs the preference stage as one of the recipe's `methods` (DPO, IPO, ..., into its own
folder). --key=value overrides every stage's training config; --sft.key=value or
--preference.key=value one kind of stage. total_batch_size is kept on any process count (gradient accumulation adapts). Every
stage's config is validated before the first one starts. Multi-node: scripts/slurm_train.sh."""
import argparse
import subprocess
import sys

import torch

from simpo_recipes.config.parsing import parse_config
from simpo_recipes.pipeline.launch import (
    describe_stage,
    detect_topology,
    launch_command,
    mixed_precision,
)
from simpo_recipes.pipeline.recipes import load_recipe, stage_commands
from simpo_recipes.training.lora import check_quantization
from simpo_recipes.training.runtime import run_cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipes/<name>.yaml")
    parser.add_argument("--plan", action="store_true", help="Describe each stage; load no weights, launch nothing.")
    parser.add_argument("--accelerate_config", default=None, help="Overrides the recipe's (ACCELERATE_CONFIG=).")
    parser.add_argument("--num_processes", type=int, default=None,
                        help="World size over all machines (NUM_GPUS=); default: every GPU found.")
    parser.add_argument("--from_sft", default=None, metavar="published|MODEL",
                        help="Skip the SFT stage; start the preference stage from the paper's SFT checkpoint or MODEL.")
    parser.add_argument("--objective", default=None, metavar="METHOD",
                        help="Run the preference stage as one of the recipe's methods (OBJECTIVE=), e.g. dpo.")
    parser.add_argument("--num_machines", type=int, default=1)
    parser.add_argument("--machine_rank", type=int, default=0)
    parser.add_argument("--main_process_ip", default=None)
    parser.add_argument("--main_process_port", type=int, default=29500)
    args, overrides = parser.parse_known_args()  # the rest: --key=value for the stages

    recipe = load_recipe(args.recipe)
    gpus = torch.cuda.device_count()
    if args.plan and gpus == 0 and recipe.hardware:
        gpus = recipe.hardware.gpus  # planning on a machine without GPUs: plan for the paper's node
        print(f"[{recipe.name}] no GPU here: planning for {gpus} GPUs per machine (NUM_GPUS= changes it)")
    topology = detect_topology(args.accelerate_config or recipe.accelerate_config, args.num_processes, gpus,
                               num_machines=args.num_machines, machine_rank=args.machine_rank,
                               main_process_ip=args.main_process_ip, main_process_port=args.main_process_port)
    print(f"[{recipe.name}] {topology.num_processes} process(es) on {'CPU' if topology.use_cpu else 'GPU'}, "
          f"{topology.distributed_type} ({topology.accelerate_config})", flush=True)

    stages = stage_commands(recipe, overrides, args.from_sft, args.objective)
    launches = []
    for i, (stage, (script, *stage_args)) in enumerate(stages, start=1):
        if topology.use_cpu:
            stage_args.append("--use_cpu=true")
        # validate here, before any stage starts; a GPU-less machine can only validate bf16 as CPU
        check_args = stage_args + ([] if torch.cuda.is_available() else ["--use_cpu=true"])
        configs = parse_config(stage.stage, check_args)
        if not args.plan:
            check_quantization(configs[3], topology.use_cpu)
        launches.append(launch_command(topology, mixed_precision(configs[2])) + [script, *stage_args])
        print(f"[{recipe.name}] stage {i}/{len(stages)} ({stage.stage}): {' '.join(stage_args)}", flush=True)
        if args.plan:
            print("\n".join(describe_stage(configs, topology, launches[-1])), flush=True)
            if stage.stage == "preference" and args.objective:
                method = recipe.methods[args.objective]
                print(f"  method:          {args.objective} ({method.label}); values: {method.source}", flush=True)
    if args.plan:
        return
    for i, command in enumerate(launches, start=1):
        print(f"[{recipe.name}] launching stage {i}/{len(launches)}: {' '.join(command)}", flush=True)
        if subprocess.run(command).returncode != 0:
            sys.exit(f"[{recipe.name}] stage {i} failed; rerun the same command to resume from its last checkpoint")


if __name__ == "__main__":
    run_cli(main)
