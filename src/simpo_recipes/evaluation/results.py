"""Benchmark results of every evaluated model, beside the paper's, as markdown and PNG.

`outputs/eval/<name>/results.json` (written by scripts/evaluate.py) holds one model's numbers per
benchmark, with its recipe and method; the paper's numbers come from the recipe's `paper_results`,
one row per method (Table 4). Each setting's table shows the paper's full rows and ours beside them;
an MT-Bench number is always labelled with the judge that gave it.
"""
from __future__ import annotations

import json
from pathlib import Path

from simpo_recipes.files import write_atomic, write_json

# column -> (benchmark in results.json, key in its entry, unit); MT-Bench columns are per judge
COLUMNS = {"AlpacaEval 2 LC": ("alpaca_eval", "length_controlled_winrate", "%"),
           "AlpacaEval 2 WR": ("alpaca_eval", "win_rate", "%"),
           "Arena-Hard WR": ("arena_hard", "win_rate", "%")}
PAPER_KEYS = {"AlpacaEval 2 LC": "alpaca_eval_lc", "AlpacaEval 2 WR": "alpaca_eval_wr",
              "Arena-Hard WR": "arena_hard_wr"}
JUDGE_LABELS = {"gpt-4": "GPT-4", "gpt-4-0613": "GPT-4", "gpt-4-1106-preview": "GPT-4 Turbo",
                "gpt-4-turbo": "GPT-4 Turbo", "gpt-4-turbo-2024-04-09": "GPT-4 Turbo"}


def mt_bench_column(judge: str) -> str:
    return f"MT-Bench ({JUDGE_LABELS.get(judge, judge)})"


def unit(column: str) -> str:
    return COLUMNS[column][2] if column in COLUMNS else ""


def update(path: str | Path, benchmark: str, entry: dict, **info) -> dict:
    """Set one benchmark's entry in a results.json (the others are kept), atomically."""
    path = Path(path)
    results = json.loads(path.read_text()) if path.exists() else {}
    results |= info
    results.setdefault("benchmarks", {})[benchmark] = entry
    write_json(path, results)
    return results


def paper_numbers(recipe) -> dict[str, dict[str, float]]:
    """The paper's rows stored in a recipe: {method: {column: value}}, missing numbers absent."""
    if recipe.paper_results is None:
        return {}
    rows = {}
    for method, row in recipe.paper_results.methods.items():
        values = {column: getattr(row, key) for column, key in PAPER_KEYS.items() if getattr(row, key) is not None}
        rows[method] = values | {mt_bench_column(judge): score for judge, score in row.mt_bench.items()}
    return rows


def ours(results: dict) -> dict[str, float]:
    """{column: value} of one results.json; benchmarks not run (or LC not computed) are absent."""
    values = {}
    benchmarks = results.get("benchmarks", {})
    for column, (benchmark, key, _) in COLUMNS.items():
        value = benchmarks.get(benchmark, {}).get(key)
        if value is not None:
            values[column] = float(value)
    mt_bench = benchmarks.get("mt_bench", {})
    if mt_bench.get("score") is not None:
        values[mt_bench_column(mt_bench.get("judge", "unknown judge"))] = float(mt_bench["score"])
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
    return "—" if value is None else f"{value:.1f}{unit(column)}"


def columns_of(settings: list[dict]) -> list[str]:
    """The fixed columns, then one MT-Bench column per judge that appears anywhere."""
    seen = {c for s in settings for row in s["rows"] for side in ("ours", "paper") for c in row[side]}
    return list(COLUMNS) + sorted(c for c in seen if c not in COLUMNS)


def markdown(settings: list[dict]) -> str:
    """settings: [{"recipe", "title", "rows": [{"method", "label", "ours", "paper", "details"}]}]: per
    setting, the paper's line and ours for every method either has, in the paper's row order; "—"
    where a number is missing; then how each of our numbers was produced (decoding mode, judge)."""
    columns = columns_of(settings)
    lines = []
    for setting in settings:
        lines += [f"## {setting['title']}", "", "| method | source | " + " | ".join(columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for row in setting["rows"]:
            for source in ("paper", "ours"):
                if row[source] or (source == "ours" and row["evaluated"]):
                    lines.append(f"| {row['label']} | {source} | "
                                 + " | ".join(_cell(row[source], c) for c in columns) + " |")
        lines.append("")
    lines += ["— : not evaluated, not computed, or not reported by the paper. MT-Bench columns are per judge.", "",
              "How our numbers were produced:"]
    lines += [f"- {s['recipe']} {row['method']}, {line}" for s in settings for row in s["rows"]
              for line in row["details"]]
    return "\n".join(lines) + "\n"


def plot(settings: list[dict], path: str | Path) -> None:
    """A row of panels per setting, one panel per metric with a number (ours or the paper's): a bar
    per method and source with its value printed; a missing number is an outlined placeholder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    columns = columns_of(settings)
    used = [[c for c in columns if any(c in row[s] for row in setting["rows"] for s in ("ours", "paper"))]
            for setting in settings]
    width = max([len(cols) for cols in used] + [1])
    methods = max(len(setting["rows"]) for setting in settings)
    fig, axes = plt.subplots(len(settings), width, squeeze=False,
                             figsize=(width * max(3.2, 0.55 * methods + 1.2), 3.9 * len(settings)))
    sources = (("paper", -0.2, "tab:gray"), ("ours", 0.2, "tab:blue"))
    for setting, cols, panels in zip(settings, used, axes):
        rows = setting["rows"]
        for ax in panels[len(cols):]:
            ax.axis("off")
        if not cols:
            panels[0].text(0.5, 0.5, f"{setting['title']}: no numbers yet", ha="center", va="center")
        for ax, column in zip(panels, cols):
            top = max([row[s].get(column, 0) for row in rows for s, _, _ in sources] + [1e-9])
            ceiling = 100 if unit(column) == "%" else 10
            ax.set_ylim(0, min(ceiling, top * 1.3))
            for k, row in enumerate(rows):
                for source, shift, color in sources:
                    value = row[source].get(column)
                    if value is not None:
                        ax.bar(k + shift, value, 0.38, color=color)
                        ax.text(k + shift, value, f"{value:.1f}", ha="center", va="bottom", fontsize=6.5,
                                rotation=90 if len(rows) > 6 else 0)
                    elif source == "paper" or row["evaluated"]:
                        height = ax.get_ylim()[1] * 0.08
                        ax.bar(k + shift, height, 0.38, fill=False, edgecolor=color, hatch="//", linestyle="--")
            ax.set_xticks(range(len(rows)), [r["label"] for r in rows], rotation=45, ha="right", fontsize=7)
            ax.set_xlim(-0.6, len(rows) - 0.4)
            ax.set_title(f"{setting['title']}: {column}", fontsize=9)
            ax.set_ylabel("win rate (%)" if unit(column) == "%" else "score (1-10)", fontsize=8)
    handles = [Patch(color=c, label=s) for s, _, c in sources]
    handles.append(Patch(fill=False, hatch="//", label="missing (not evaluated / not reported)"))
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Our evaluation beside the SimPO paper's Table 4", fontsize=12)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collect(eval_root: str | Path, recipes_dir: str | Path) -> list[dict]:
    """Per setting with any outputs/eval/*/results.json: the paper's full rows of that setting and ours,
    one row per method (sft first, then the recipe's methods in the paper's order)."""
    from simpo_recipes.pipeline.recipes import load_recipe

    evaluated: dict[str, dict[str, dict]] = {}
    for path in sorted(Path(eval_root).glob("*/results.json")):
        results = json.loads(path.read_text())
        evaluated.setdefault(results.get("recipe", path.parent.name), {})[results.get("method", "simpo")] = results
    settings = []
    for name, by_method in evaluated.items():
        recipe_file = Path(recipes_dir) / f"{name}.yaml"
        recipe = load_recipe(recipe_file) if recipe_file.exists() else None
        paper = paper_numbers(recipe) if recipe else {}
        labels = {"sft": "SFT"} | ({m: method.label for m, method in recipe.methods.items()} if recipe else {})
        order = [m for m in labels if m in paper or m in by_method] + [m for m in by_method if m not in labels]
        rows = [{"method": m, "label": labels.get(m) or by_method[m].get("name", m), "paper": paper.get(m, {}),
                 "evaluated": m in by_method,
                 "ours": ours(by_method[m]) if m in by_method else {},
                 "details": details(by_method[m]) if m in by_method else []} for m in order]
        title = name + (f" ({recipe.description.split('(paper: ')[-1].rstrip(')')})" if recipe and
                        "(paper: " in recipe.description else "")
        settings.append({"recipe": name, "title": title, "rows": rows})
    return settings


def write_table(eval_root: str | Path, recipes_dir: str | Path) -> tuple[Path, str]:
    """table.md and table.png under eval_root; returns (markdown path, markdown)."""
    settings = collect(eval_root, recipes_dir)
    if not settings:
        raise FileNotFoundError(f"no {eval_root}/*/results.json: run `make eval MODEL=<recipe>` first")
    text = markdown(settings)
    plot(settings, Path(eval_root) / "table.png")
    return write_atomic(Path(eval_root) / "table.md", text), text
