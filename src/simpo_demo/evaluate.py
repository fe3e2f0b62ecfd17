"""Generate answers to the demo's held-out prompts with several models, judge them by program
and compare the models: accuracy, mean response length and win rate against the first model.

The same comparison also goes through the AlpacaEval 2 hand-off that real models use: the first
model's answers are the reference outputs, and alpaca_eval's own `evaluate` asks a judge served on
127.0.0.1 that decides by this program (right beats wrong, equal correctness is a tie), so its win
rate must equal the program's."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from simpo_demo.task import judge
from simpo_recipes.evaluation.generation import GenerationSettings, generate
from simpo_recipes.files import read_jsonl, write_atomic, write_json


def cached_generations(name: str, model_path: str | Path, records: list[dict], settings: GenerationSettings,
                       output_dir: str | Path) -> list[dict]:
    """Rows {prompt_id, instruction, output, n_tokens} answering each record's instruction (one user
    turn), kept in generations/<name>.jsonl under `output_dir`: a rerun generates only what is missing."""
    requests = [{"id": r["prompt_id"], "messages": [{"role": "user", "content": r["instruction"]}]} for r in records]
    rows = generate(Path(output_dir) / "generations" / f"{name}.jsonl", model_path, requests, settings,
                    desc=f"generating {name}")
    return [{"prompt_id": r["prompt_id"], "instruction": r["instruction"], "output": g["output"],
             "n_tokens": g["n_tokens"]} for r, g in zip(records, rows)]


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
    handoff = any("alpaca_eval" in m for m in models.values())
    head = ["model", "accuracy", *(f"acc. {t}" for t in tasks), "mean length (tokens)",
            f"win rate vs {summary['baseline']}"] + [f"alpaca_eval win rate vs {summary['baseline']}"] * handoff
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for name, m in models.items():
        win = "-" if m["win_rate_vs_baseline"] is None else f"{m['win_rate_vs_baseline']:.1%}"
        cells = [name, f"{m['accuracy']:.1%}", *(f"{m['task_accuracy'].get(t, float('nan')):.1%}" for t in tasks),
                 f"{m['mean_length']:.1f}", win]
        if handoff:
            entry = m.get("alpaca_eval")
            cells.append("-" if entry is None else f"{entry['win_rate']:.1f}%")
            if entry is not None:
                lc = entry["length_controlled_winrate"]
                notes.append(f"{name}: AlpacaEval length-controlled win rate "
                             + (f"{lc:.1f}%" if lc is not None else entry["lc_note"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


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


def program_preference(instruction: str, a: str, b: str) -> float:
    """Probability that answer a beats answer b for the demo's program judge."""
    right_a, right_b = judge({"instruction": instruction}, a), judge({"instruction": instruction}, b)
    return 0.5 if right_a == right_b else float(right_a)


def gold_references(heldout: str | Path) -> list[dict]:
    """AlpacaEval reference outputs: the demo's held-out prompts with their correct answers."""
    return [{"instruction": r["instruction"], "output": r["answer"], "generator": "gold", "dataset": f"demo-{r['task']}"}
            for r in read_jsonl(heldout)]


def alpaca_eval_handoff(generations: dict[str, list[dict]], output_dir: Path) -> dict[str, dict]:
    """alpaca_eval's result of every model against the first one's answers (the reference)."""
    import secrets

    from simpo_recipes.evaluation import alpacaeval
    from simpo_recipes.evaluation.judge import Judge
    from simpo_recipes.evaluation.local_judge import ProgramJudge

    (base, base_rows), *others = generations.items()
    reference = [{"instruction": g["instruction"], "output": g["output"], "generator": base, "dataset": "demo"}
                 for g in base_rows]
    reference_path = write_json(output_dir / "alpaca_eval" / f"reference_{base}.json", reference)
    key = secrets.token_hex(16)  # the loopback judge's key lives in memory and in the harness's env only
    with ProgramJudge(program_preference, api_key=key) as server:
        judge_ = Judge(model="demo-program-judge", base_url=server.base_url, api_key=key)
        return {name: alpacaeval.evaluate(
            alpacaeval.write_outputs(output_dir / "alpaca_eval" / name / "model_outputs.json", reference, rows, name),
            reference_path, judge_, output_dir / "alpaca_eval" / name, name, echo=False) for name, rows in others}


def evaluate(models: dict[str, str], heldout: str | Path, output_dir: str | Path,
             settings: GenerationSettings = GenerationSettings(), alpaca_eval: bool = True) -> dict:
    """Generate (cached), judge and compare `models` ({name: local path}, first = baseline), also
    through alpaca_eval when asked; writes results.md, results.json and results.png under `output_dir`."""
    out = Path(output_dir)
    records = read_jsonl(heldout)
    generations = {name: cached_generations(name, path, records, settings, out) for name, path in models.items()}
    summary = summarize(records, generations)
    if alpaca_eval and len(generations) > 1:
        print(f"alpaca_eval evaluate against {next(iter(models))}'s answers (log: {out}/alpaca_eval/<model>/alpaca_eval.log)")
        for name, entry in alpaca_eval_handoff(generations, out).items():
            summary["models"][name]["alpaca_eval"] = entry
    summary["settings"] = asdict(settings)
    summary["model_paths"] = dict(models)
    write_atomic(out / "results.md", markdown_table(summary))
    write_json(out / "results.json", summary)
    plot(summary, out / "results.png")
    return summary
