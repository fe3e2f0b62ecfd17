"""The model card (README.md with Hugging Face Hub metadata) of a stage's output folder: starting
model, data, objective and its hyperparameters, global batch, final metrics, and evaluation results
once `make eval` has run. It replaces TRL's placeholder card, and is what a push to the Hub uploads."""
from __future__ import annotations

import math
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from simpo_recipes.training.reporting import FINAL_METRICS, final_metrics, read_metrics

TAG = "simpo-recipes"  # marks a card this repository wrote (make eval updates only those)
# benchmark in results.json -> (Hub dataset id, display name)
BENCHMARKS = {"alpaca_eval": ("tatsu-lab/alpaca_eval", "AlpacaEval 2"),
              "arena_hard": ("lmarena-ai/arena-hard-auto-v0.1", "Arena-Hard v0.1"),
              "mt_bench": ("lmsys/mt_bench_human_judgments", "MT-Bench")}
EVALUATION = "## Evaluation"
NOT_EVALUATED = (f"{EVALUATION}\n\nNot evaluated yet: `make eval MODEL=<recipe>` adds AlpacaEval 2, Arena-Hard and "
                 "MT-Bench here.\n")


def objective(run_config: dict) -> tuple[str, dict]:
    """(objective name, its resolved hyperparameters, e.g. SimPO's effective γ) from a stage's run
    config: the preference stage names it in `objective`; a stage without one is SFT."""
    from simpo_recipes.objectives import OBJECTIVES

    if "objective" not in run_config:
        return "sft", {}
    cls = OBJECTIVES[run_config["objective"]]
    resolved = cls(**{k: run_config[k] for k in cls.keys() if k in run_config}).hyperparameters()
    return cls.name, {k: v for k, v in resolved.items() if v is not None}


def _hub_ancestor(model: str) -> str | None:
    """The Hub model a run descends from: `model` itself if it is a Hub name, else what the card of
    the local folder names as its base model."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return model
    card = folder / "README.md"
    return ModelCard.load(card).data.base_model if card.exists() else None


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render(output_dir: Path, global_batch: int) -> ModelCard:
    """The card of a finished stage, from its run_config.yaml and metrics.jsonl."""
    config = yaml.safe_load((output_dir / "run_config.yaml").read_text())
    lines = read_metrics(output_dir / "metrics.jsonl")
    start, mixer = config["model_name_or_path"], config["dataset_mixer"]
    name, hyperparameters = objective(config)
    hub_data = [d for d in mixer if not Path(d).expanduser().is_dir()]
    ancestor = _hub_ancestor(start)
    data = ModelCardData(base_model=ancestor, datasets=hub_data or None, library_name="transformers",
                         tags=[name, TAG, "trl" if name == "sft" else "preference-optimization"],
                         model_name=output_dir.name)
    warmup = config.get("warmup_steps") or 0
    train, held_out = final_metrics(lines, ""), final_metrics(lines, "eval_")
    steps = max((line["step"] for line in lines), default=0)
    rows = [
        ("objective", f"{name}" + (": " + ", ".join(f"{k} {_format(v)}" for k, v in hyperparameters.items())
                                   if hyperparameters else " (next-token loss on the assistant turns)")),
        ("starting model", f"`{start}`" + (f" (from {ancestor})" if ancestor and ancestor != start else "")),
        ("data", ", ".join(f"`{d}` ({f:g})" for d, f in mixer.items())
         + f"; splits {', '.join(config['dataset_splits'])}"),
        ("global batch", f"{global_batch} sequences" if name == "sft" else f"{global_batch} pairs"),
        ("learning rate", f"{_format(config['learning_rate'])}, {config['lr_scheduler_type']} schedule, warmup "
                          + (f"{warmup:.0%} of the steps" if 0 < warmup < 1 else f"{int(warmup)} steps")),
        ("optimizer steps", f"{steps} ({_format(config['num_train_epochs'])} epoch(s) planned)"),
        ("precision", "bf16" if config.get("bf16") else "fp16" if config.get("fp16") else "fp32"),
        ("max length", str(config["max_length"]) + (f" (prompt {config['max_prompt_length']})"
                                                    if "max_prompt_length" in config else "")),
        ("seed", str(config["seed"])),
    ]
    metrics = [f"| {k} | {_format(train.get(k, '—'))} | {_format(held_out.get(k, '—'))} |"
               for k in FINAL_METRICS if k in train or k in held_out]
    body = [
        f"# {output_dir.name}", "",
        f"{'SFT' if name == 'sft' else name} stage trained with the SimPO recipes (this repository's "
        f"`scripts/run_{'sft' if name == 'sft' else 'preference'}.py`), from `{start}`.", "",
        "## Training", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), "",
        "## Final metrics", "", "| metric | train (last log) | held-out |", "|---|---|---|",
        *(metrics or ["| — | — | — |"]), "",
        NOT_EVALUATED,
        "## Files", "",
        "`run_config.yaml` (the resolved config), `metrics.jsonl` (every log line), `training_curves.png`.", "",
        "## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
        f'tokenizer = AutoTokenizer.from_pretrained("{output_dir}")  # or the Hub id it was pushed to',
        f'model = AutoModelForCausalLM.from_pretrained("{output_dir}")',
        'ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}], add_generation_prompt=True,',
        '                                    return_tensors="pt", return_dict=True)',
        "print(tokenizer.decode(model.generate(**ids, max_new_tokens=64)[0]))", "```", "",
    ]
    return ModelCard("---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(body))


def write_model_card(output_dir: str | Path, global_batch: int) -> Path:
    path = Path(output_dir) / "README.md"
    render(Path(output_dir), global_batch).save(path)
    return path


def add_evaluation(model_dir: str | Path, results: dict) -> Path | None:
    """Set a card's evaluation section and Hub model-index from a results.json (scripts/evaluate.py).
    Cards this repository did not write are left alone (None)."""
    from simpo_recipes.evaluation.results import COLUMNS, mt_bench_column

    path = Path(model_dir) / "README.md"
    if not path.exists():
        return None
    card = ModelCard.load(path)
    if TAG not in (card.data.tags or []):
        return None
    benchmarks = results.get("benchmarks", {})
    # MT-Bench's column names its judge, as in `make table`
    mt_bench = mt_bench_column(benchmarks.get("mt_bench", {}).get("judge", "unknown judge"))
    evals, table = [], ["| benchmark | metric | value | judge |", "|---|---|---|---|"]
    for column, (benchmark, key, unit) in (COLUMNS | {mt_bench: ("mt_bench", "score", "")}).items():
        entry = benchmarks.get(benchmark, {})
        value = entry.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        dataset, title = BENCHMARKS[benchmark]
        judge = entry.get("judge", "")
        evals.append(EvalResult(task_type="text-generation", dataset_type=dataset, dataset_name=title,
                                metric_type=key, metric_value=float(value),
                                metric_name=column + (f" ({unit})" if unit else ""),
                                metric_args={"judge": judge} if judge else None))
        table.append(f"| {title} | {column} | {float(value):.1f}{unit} | {judge or '—'} |")
    card.data.eval_results = evals or None
    card.data.model_name = card.data.model_name or Path(model_dir).name
    section = (f"{EVALUATION}\n\nFrom `{results.get('recipe', '')}` evaluation (`make eval`), numbers as the pinned "
               "harnesses report them:\n\n" + "\n".join(table) + "\n") if evals else NOT_EVALUATED
    head, found, rest = card.text.partition(EVALUATION)
    if found:  # replace the section up to the next heading
        after = rest.find("\n## ")
        card.text = head + section + ("\n" + rest[after + 1:] if after >= 0 else "")
    else:
        card.text = card.text.rstrip("\n") + "\n\n" + section
    card.save(path)
    return path
