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


def _cell(values: dict, column: str) -> str:
    value = values.get(column)
    return "—" if value is None else f"{value:.1f}{COLUMNS[column][2]}"


def markdown(rows: list[dict]) -> str:
    """rows: {"name", "ours", "paper"}; two lines per model, "—" where a number is missing."""
    lines = ["| model | source | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for row in rows:
        for source in ("ours", "paper"):
            lines.append(f"| {row['name']} | {source} | " + " | ".join(_cell(row[source], c) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n\n— : not evaluated, not computed, or not reported by the paper.\n"


def plot(rows: list[dict], path: str | Path) -> None:
    """One panel per metric: ours and the paper's bar per model, "n/a" where missing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4 * len(COLUMNS), 3.8), squeeze=False)
    for ax, column in zip(axes[0], COLUMNS):
        for k, row in enumerate(rows):
            for shift, source, color in ((-0.2, "ours", "tab:blue"), (0.2, "paper", "tab:gray")):
                value = row[source].get(column)
                if value is None:
                    ax.text(k + shift, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                else:
                    ax.bar(k + shift, value, 0.4, color=color, label=source if k == 0 else None)
        ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(column)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
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
        rows.append({"name": results.get("name", path.parent.name), "ours": ours(results), "paper": paper})
    return rows


def write_table(eval_root: str | Path, recipes_dir: str | Path) -> tuple[Path, str]:
    """table.md and table.png under eval_root; returns (markdown path, markdown)."""
    rows = collect(eval_root, recipes_dir)
    if not rows:
        raise FileNotFoundError(f"no {eval_root}/*/results.json: run `make eval MODEL=<recipe>` first")
    text = markdown(rows)
    plot(rows, Path(eval_root) / "table.png")
    return write_atomic(Path(eval_root) / "table.md", text), text
