#!/usr/bin/env python
"""`make train MODEL=<name>` / `make plan MODEL=<name>`: run, or only describe, every stage of
recipes/<name>.yaml in order, each launched with `accelerate launch` over every GPU found and
starting from the previous stage's output.

    python scripts/train.py recipes/llama3-base.yaml [--plan] [--num_processes N] [--objective METHOD]
        [--accelerate_config PATH] [--from_sft published|MODEL] [--key=value] [--<stage>.key=value]

--objective runs the preference stage as one of the recipe's `methods` (DPO, IPO, ..., into its own
folder). --key=value overrides every stage's training config; --sft.key=value or
--preference.key=value one kind of stage. total_batch_size is kept on any process count (gradient accumulation adapts). Every
stage's config is validated before the first one starts. Multi-node: scripts/slurm_train.sh.
Ctrl-C and SIGTERM are passed on to the running stage, which stops cleanly; a rerun resumes it."""
import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from simpo_recipes.cli import STATUS_FILE, USER_ERROR, run_cli
from simpo_recipes.pipeline.launch import chained_tokenizer, describe_stage, prepare_stage, recipe_topology
from simpo_recipes.pipeline.recipes import load_recipe, override_origins, stage_commands
from simpo_recipes.pipeline.summary import run_summary
from simpo_recipes.training.run_folder import resume_hint


def run_stage(command: list[str]) -> int:
    """Run one stage in a process group of its own, pass Ctrl-C and SIGTERM on to all of it, and
    return once every process of it has ended: its exit status as the stage itself reported it."""
    with tempfile.TemporaryDirectory() as tmp:
        status = Path(tmp) / "status"
        process = subprocess.Popen(command, start_new_session=True, env=os.environ | {STATUS_FILE: str(status)})

        def forward(signum, frame):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = process.wait()
            while True:  # the launcher may end before the processes it started
                try:
                    os.killpg(process.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return int(status.read_text()) if status.exists() else code


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
    topology, note = recipe_topology(recipe, args.accelerate_config, args.num_processes, args.plan,
                                     num_machines=args.num_machines, machine_rank=args.machine_rank,
                                     main_process_ip=args.main_process_ip, main_process_port=args.main_process_port)
    if note:
        print(f"[{recipe.name}] {note}")
    print(f"[{recipe.name}] {topology.num_processes} process(es) on {'CPU' if topology.use_cpu else 'GPU'}, "
          f"{topology.distributed_type} ({topology.accelerate_config})", flush=True)

    stages = stage_commands(recipe, overrides, args.from_sft, args.objective)
    origins = override_origins(recipe, overrides, args.from_sft, args.objective)
    launches, outputs, tokenizer_args = [], [], None
    for i, (stage, (script, *stage_args)) in enumerate(stages, start=1):
        configs, command = prepare_stage(stage, script, stage_args, topology, args.plan,  # all before any runs
                                         origins[i - 1])
        launches.append(command)
        outputs.append(Path(configs[2].output_dir))
        shown = " ".join(command[command.index(script) + 1:])
        print(f"[{recipe.name}] stage {i}/{len(stages)} ({stage.stage}): {shown}", flush=True)
        if args.plan:
            tokenizer_args = chained_tokenizer(*configs[:2], tokenizer_args)
            print("\n".join(describe_stage(configs, topology, launches[-1], stage.config, tokenizer_args)), flush=True)
            if stage.stage == "preference" and args.objective:
                method = recipe.methods[args.objective]
                print(f"  method:          {args.objective} ({method.label}); values: {method.source}", flush=True)
    if args.plan:
        return
    finished = []
    for i, command in enumerate(launches, start=1):
        print(f"[{recipe.name}] launching stage {i}/{len(launches)}: {' '.join(command)}", flush=True)
        start = time.monotonic()
        code = run_stage(command)
        label = f"stage {i}/{len(launches)} ({stages[i - 1][0].stage})"
        where = f"[{recipe.name}] {label}"
        if code == USER_ERROR:  # the stage said what to change; the same command would fail again
            print(f"{where} stopped: see its error above", file=sys.stderr)
            sys.exit(USER_ERROR)
        if code in (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM):
            print(f"{where} stopped by {signal.Signals(abs(code) % 128).name}; {resume_hint(outputs[i - 1])}",
                  file=sys.stderr)
            sys.exit(128 + abs(code) % 128)
        if code != 0:
            sys.exit(f"{where} failed (exit {code}); once its cause above is fixed, {resume_hint(outputs[i - 1])}")
        finished.append((label, time.monotonic() - start, outputs[i - 1]))
    print(run_summary(recipe.name, finished), flush=True)


if __name__ == "__main__":
    run_cli(main)
