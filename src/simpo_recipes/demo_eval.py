"""Generate answers to the demo's held-out prompts with several models, judge them by program
and compare the models: accuracy, mean response length and win rate against the first model."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from simpo_recipes.demo_task import judge


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    batch_size: int = 32
    seed: int = 42


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file, so `path` is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fingerprint(model_path: str | Path, records: list[dict], settings: GenerationSettings) -> dict:
    """What the generations depend on: model folder (files, sizes, mtimes), prompts, settings."""
    root = Path(model_path).resolve()
    files = sorted(f"{p.relative_to(root)}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                   for p in root.rglob("*") if p.is_file())
    prompts = hashlib.sha256("\n".join(r["prompt_id"] for r in records).encode()).hexdigest()
    return {"model_path": str(root), "files": hashlib.sha256("\n".join(files).encode()).hexdigest(),
            "prompts": prompts, "settings": asdict(settings)}


def generate(model_path: str | Path, records: list[dict], settings: GenerationSettings) -> list[dict]:
    """Answer every record's "instruction" (one user turn); rows of prompt_id, instruction,
    output, n_tokens (end-of-turn excluded), in the order of `records`."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from simpo_recipes.chat import encode_prompt

    set_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True).eval()
    eos = model.generation_config.eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} if settings.temperature > 0 else {
        "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    prompts = [encode_prompt(tokenizer, [{"role": "user", "content": r["instruction"]}]) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    outputs: dict[int, dict] = {}
    for start in tqdm(range(0, len(order), settings.batch_size), desc=f"generating {Path(model_path).name}"):
        batch = order[start: start + settings.batch_size]
        width = max(len(prompts[i]) for i in batch)
        ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in batch])  # left padding
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=settings.max_new_tokens,
                                 eos_token_id=eos, pad_token_id=pad, **sampling)
        for i, row in zip(batch, out[:, width:].tolist()):
            stop = next((k for k, t in enumerate(row) if t in eos), len(row))
            outputs[i] = {"prompt_id": records[i]["prompt_id"], "instruction": records[i]["instruction"],
                          "output": tokenizer.decode(row[:stop], skip_special_tokens=True), "n_tokens": stop}
    return [outputs[i] for i in range(len(records))]


def cached_generations(name: str, model_path: str | Path, records: list[dict], settings: GenerationSettings,
                       output_dir: str | Path) -> list[dict]:
    """generations/<name>.jsonl under `output_dir`, regenerated only if the model folder, the
    prompts or the settings changed since it was written."""
    path = Path(output_dir) / "generations" / f"{name}.jsonl"
    meta_path = path.with_suffix(".meta.json")
    key = _fingerprint(model_path, records, settings)
    if path.exists() and meta_path.exists() and json.loads(meta_path.read_text()) == key:
        rows = read_jsonl(path)
        if [r["prompt_id"] for r in rows] == [r["prompt_id"] for r in records]:
            return rows
    rows = generate(model_path, records, settings)
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    write_atomic(meta_path, json.dumps(key, indent=1))
    return rows


def win_rate(base: list[bool], other: list[bool]) -> float:
    """Per prompt: other correct and base wrong = 1, same correctness = 0.5, else 0; mean."""
    if len(base) != len(other) or not base:
        raise ValueError("win rate needs two equally long, non-empty lists of judgements")
    return sum(1.0 if o > b else 0.5 if o == b else 0.0 for b, o in zip(base, other)) / len(base)


def summarize(records: list[dict], generations: dict[str, list[dict]]) -> dict:
    """Per model (in the order given): accuracy, per-task accuracy, mean length, win rate vs the first."""
    by_id = {r["prompt_id"]: r for r in records}
    judged = {name: {g["prompt_id"]: judge(by_id[g["prompt_id"]], g["output"]) for g in rows}
              for name, rows in generations.items()}
    base_name = next(iter(generations))
    summary: dict = {"baseline": base_name, "n_prompts": len(records), "models": {}}
    for name, rows in generations.items():
        ok = list(judged[name].values())
        per_task: dict[str, list[bool]] = {}
        for pid, correct in judged[name].items():
            per_task.setdefault(by_id[pid].get("task", "all"), []).append(correct)
        summary["models"][name] = {
            "accuracy": sum(ok) / len(ok),
            "task_accuracy": {t: sum(v) / len(v) for t, v in sorted(per_task.items())},
            "mean_length": sum(g["n_tokens"] for g in rows) / len(rows),
            "win_rate_vs_baseline": None if name == base_name else win_rate(
                [judged[base_name][pid] for pid in by_id], [judged[name][pid] for pid in by_id]),
        }
    return summary


def markdown_table(summary: dict) -> str:
    models = summary["models"]
    tasks = sorted({t for m in models.values() for t in m["task_accuracy"]})
    head = ["model", "accuracy", *(f"acc. {t}" for t in tasks), "mean length (tokens)",
            f"win rate vs {summary['baseline']}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in models.items():
        win = "-" if m["win_rate_vs_baseline"] is None else f"{m['win_rate_vs_baseline']:.1%}"
        cells = [name, f"{m['accuracy']:.1%}", *(f"{m['task_accuracy'].get(t, float('nan')):.1%}" for t in tasks),
                 f"{m['mean_length']:.1f}", win]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: str | Path) -> None:
    """Grouped bars: overall and per-task accuracy of each model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = summary["models"]
    groups = ["overall", *sorted({t for m in models.values() for t in m["task_accuracy"]})]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(groups), 3.6))
    for k, (name, m) in enumerate(models.items()):
        values = [m["accuracy"], *(m["task_accuracy"].get(g, 0.0) for g in groups[1:])]
        ax.bar([i + k * width for i in range(len(groups))], values, width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy on held-out prompts")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def evaluate(models: dict[str, str], heldout: str | Path, output_dir: str | Path,
             settings: GenerationSettings = GenerationSettings()) -> dict:
    """Generate (cached), judge and compare `models` ({name: local path}, first = baseline);
    writes results.md, results.json and results.png under `output_dir`."""
    out = Path(output_dir)
    records = read_jsonl(heldout)
    generations = {name: cached_generations(name, path, records, settings, out) for name, path in models.items()}
    summary = summarize(records, generations)
    summary["settings"] = asdict(settings)
    summary["model_paths"] = dict(models)
    write_atomic(out / "results.md", markdown_table(summary))
    write_atomic(out / "results.json", json.dumps(summary, indent=2))
    plot(summary, out / "results.png")
    return summary
