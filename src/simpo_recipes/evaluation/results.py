"""Benchmark results of every evaluated model, beside the paper's, as markdown and PNG.

`outputs/eval/<name>/results.json` (written by scripts/evaluate.py) holds one model's numbers per
benchmark; the paper's numbers come from its recipe.
"""
from __future__ import annotations

import json
from pathlib import Path

from simpo_recipes.files import write_atomic, write_json

# column -> (benchmark in results.json, key in its entry, unit)
COLUMNS = {"AlpacaEval 2 LC": ("alpaca_eval", "length_controlled_winrate", "%"),
           "AlpacaEval 2 WR": ("alpaca_eval", "win_rate", "%"),
           "Arena-Hard WR": ("arena_hard", "win_rate", "%"),
           "MT-Bench": ("mt_bench", "score", "")}
PAPER_KEYS = {"AlpacaEval 2 LC": "alpaca_eval_lc", "AlpacaEval 2 WR": "alpaca_eval_wr",
              "Arena-Hard WR": "arena_hard_wr", "MT-Bench": "mt_bench"}


def update(path: str | Path, benchmark: str, entry: dict, **info) -> dict:
    """Set one benchmark's entry in a results.json (the others are kept), atomically."""
    path = Path(path)
    results = json.loads(path.read_text()) if path.exists() else {}
    results |= info
    results.setdefault("benchmarks", {})[benchmark] = entry
    write_json(path, results)
    return results


def paper_numbers(recipe) -> dict[str, float]:
    """The paper's reported results stored in a recipe ({column: value}; missing ones absent)."""
    if recipe.paper_results is None:
        return {}
    reported = vars(recipe.paper_results)
    return {column: reported[key] for column, key in PAPER_KEYS.items() if reported[key] is not None}


def ours(results: dict) -> dict[str, float]:
    """{column: value} of one results.json; benchmarks not run (or LC not computed) are absent."""
    values = {}
    for column, (benchmark, key, _) in COLUMNS.items():
        value = results.get("benchmarks", {}).get(benchmark, {}).get(key)
        if value is not None:
            values[column] = float(value)
    return values


BENCHMARK_NAMES = {"alpaca_eval": "AlpacaEval 2", "arena_hard": "Arena-Hard", "mt_bench": "MT-Bench"}


def details(results: dict) -> list[str]:
    """Per benchmark run: the decoding mode and the judge (model, host) that produced it."""
    lines = []
    for benchmark, entry in results.get("benchmarks", {}).items():
        judge = entry.get("judge", "unknown judge") + (f" at {entry['judge_host']}" if entry.get("judge_host") else "")
        mode = entry.get("decoding_mode", "not recorded")
        decoding = f" ({entry['decoding']})" if entry.get("decoding") else ""
        lines.append(f"{BENCHMARK_NAMES.get(benchmark, benchmark)}: decoding {mode}{decoding}; judge {judge}")
    return lines


def _cell(values: dict, column: str) -> str:
    value = values.get(column)
    return "—" if value is None else f"{value:.1f}{COLUMNS[column][2]}"


def markdown(rows: list[dict]) -> str:
    """rows: {"name", "ours", "paper", "details"}; two lines per model, "—" where a number is
    missing; then how each of our numbers was produced (decoding mode, judge)."""
    lines = ["| model | source | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for row in rows:
        for source in ("ours", "paper"):
            lines.append(f"| {row['name']} | {source} | " + " | ".join(_cell(row[source], c) for c in COLUMNS) + " |")
    lines += ["", "— : not evaluated, not computed, or not reported by the paper.", "", "How our numbers were produced:"]
    lines += [f"- {row['name']}, {line}" for row in rows for line in row.get("details", [])]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str | Path) -> None:
    """One panel per metric that has a number (ours or the paper's), a bar per model and source
    with its value printed; a missing number is an outlined, labelled placeholder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    columns = [c for c in COLUMNS if any(c in row[source] for row in rows for source in ("ours", "paper"))]
    panels = max(len(columns), 1)
    fig, axes = plt.subplots(1, panels, figsize=(panels * max(2.8, 1.1 * len(rows) + 1.2), 4.4), squeeze=False)
    sources = (("ours", -0.2, "tab:blue"), ("paper", 0.2, "tab:gray"))
    for ax, column in zip(axes[0], columns):
        unit = COLUMNS[column][2]
        top = max([row[s].get(column, 0) for row in rows for s, _, _ in sources] + [1e-9])
        ceiling = 100 if unit == "%" else 10
        ax.set_ylim(0, min(ceiling, top * 1.25) if top > 0 else ceiling)
        for k, row in enumerate(rows):
            for source, shift, color in sources:
                value = row[source].get(column)
                if value is None:
                    height = ax.get_ylim()[1] * 0.12
                    ax.bar(k + shift, height, 0.38, fill=False, edgecolor=color, hatch="//", linestyle="--")
                    ax.text(k + shift, height, "missing", ha="center", va="bottom", fontsize=7, color=color)
                else:
                    ax.bar(k + shift, value, 0.38, color=color)
                    ax.text(k + shift, value, f"{value:.1f}{unit}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=20 if len(rows) > 2 else 0, ha="right"
                      if len(rows) > 2 else "center", fontsize=8)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_title(column, fontsize=10)
        ax.set_ylabel("win rate (%)" if unit == "%" else "score (1-10)")
    if not columns:
        axes[0][0].axis("off")
        axes[0][0].text(0.5, 0.5, "no numbers yet: run `make eval`", ha="center", va="center")
    handles = [Patch(color=c, label=s) for s, _, c in sources]
    handles.append(Patch(fill=False, hatch="//", label="missing (not evaluated / not reported)"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Our evaluation beside the SimPO paper's numbers", fontsize=12)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collect(eval_root: str | Path, recipes_dir: str | Path) -> list[dict]:
    """One row per outputs/eval/<name>/results.json, with its recipe's paper numbers."""
    from simpo_recipes.pipeline.recipes import load_recipe

    rows = []
    for path in sorted(Path(eval_root).glob("*/results.json")):
        results = json.loads(path.read_text())
        recipe_file = Path(recipes_dir) / f"{results.get('recipe', '')}.yaml"
        paper = paper_numbers(load_recipe(recipe_file)) if recipe_file.exists() else {}
        rows.append({"name": results.get("name", path.parent.name), "ours": ours(results), "paper": paper,
                     "details": details(results)})
    return rows


def write_table(eval_root: str | Path, recipes_dir: str | Path) -> tuple[Path, str]:
    """table.md and table.png under eval_root; returns (markdown path, markdown)."""
    rows = collect(eval_root, recipes_dir)
    if not rows:
        raise FileNotFoundError(f"no {eval_root}/*/results.json: run `make eval MODEL=<recipe>` first")
    text = markdown(rows)
    plot(rows, Path(eval_root) / "table.png")
    return write_atomic(Path(eval_root) / "table.md", text), text
