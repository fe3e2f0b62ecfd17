"""`make sweep`: tune a recipe's preference stage over a grid, each point its own training run and
output folder, then one table and one plot of the chosen metric.

Sequential search (the authors' order) tunes one key at a time: every value of the first key with the
others at the recipe's values, then the second key with the first at its best value, and so on. Grid
search runs every combination. Each finished point leaves `sweep_point.json` (its values, final
metrics and time) in its folder: that is the sweep's own record, so a rerun skips finished points, an
interrupted one resumes from its last checkpoint, and extending the grid runs only the new points.
"""
from __future__ import annotations

import itertools
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simpo_recipes.config.arguments import ConfigError
from simpo_recipes.files import write_atomic, write_json
from simpo_recipes.training.reporting import read_metrics

RECORD, DEFINITION = "sweep_point.json", "sweep.json"
BENCHMARKS = ("alpaca_eval", "arena_hard", "mt_bench")  # scripts/evaluate.py's; metrics `<benchmark>/<key>`
SHORT = {"learning_rate": "lr", "gamma_beta_ratio": "gbr", "beta": "beta", "gamma": "gamma"}
EXCLUSIVE = {"gamma_beta_ratio": "gamma", "gamma": "gamma_beta_ratio"}  # a margin is given one way only
# what defines every point's run besides its values: a sweep folder holds one such definition
DEFINING = ("recipe", "stage_config", "fixed", "from_sft", "objective")


def number(value: Any) -> Any:
    """YAML reads 1e-6 as a string: grid values are numbers where they look like one."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool

    @classmethod
    def parse(cls, text: str) -> Metric:
        name, _, direction = text.partition(":")
        if direction not in ("", "min", "max"):
            raise ConfigError(f"metric {text!r}: write NAME, NAME:min or NAME:max")
        return cls(name, direction == "max" if direction else "loss" not in name)

    def best(self, records: list[dict]) -> dict | None:
        scored = [r for r in records if r["metrics"].get(self.name) is not None]
        if not scored:
            return None
        return (max if self.higher_is_better else min)(scored, key=lambda r: r["metrics"][self.name])

    def __str__(self) -> str:
        return f"{self.name} ({'higher' if self.higher_is_better else 'lower'} is better)"


@dataclass
class Point:
    values: dict[str, Any] = field(metadata={"help": "Every grid key's value at this point, in grid order."})
    axis: str | None = field(default=None, metadata={"help": "Sequential search: the key this point tunes."})

    @property
    def name(self) -> str:
        return "_".join(f"{SHORT.get(k, k)}{shown(v)}" for k, v in self.values.items())

    def overrides(self) -> list[str]:
        args = [f"--{k}={shown(v)}" for k, v in self.values.items()]
        return args + [f"--{EXCLUSIVE[k]}=" for k in self.values if k in EXCLUSIVE and EXCLUSIVE[k] not in self.values]


@dataclass
class SweepSpec:
    grid: dict[str, list] = field(metadata={"help": "{config key: values} in tuning order."})
    search: str = field(metadata={"help": "sequential or grid."})
    metrics: list[Metric] = field(metadata={"help": "Shown in the table; the first chooses."})
    base: dict[str, Any] = field(metadata={"help": "The recipe's own value of each grid key."})

    def __post_init__(self) -> None:
        self.grid = {key: [number(v) for v in values] for key, values in self.grid.items()}

    def axis_points(self, axis: str, chosen: dict[str, Any]) -> list[Point]:
        """Sequential search: the points tuning `axis`, earlier keys at their `chosen` values, later ones
        at the recipe's."""
        keys = list(self.grid)
        fixed = {k: chosen[k] for k in keys[:keys.index(axis)]} | {k: self.base[k] for k in keys[keys.index(axis) + 1:]}
        return [Point({k: v if k == axis else fixed[k] for k in keys}, axis) for v in self.grid[axis]]

    def grid_points(self) -> list[Point]:
        return [Point(dict(zip(self.grid, combo))) for combo in itertools.product(*self.grid.values())]

    def choose(self, records: list[dict], axis: str | None = None) -> dict | None:
        """The best finished point by the first metric. A tie keeps the recipe's value of `axis` when it
        is among the tied (no evidence to move away from it), else the first in grid order."""
        metric = self.metrics[0]
        best = metric.best(records)
        if best is None:
            return None
        tied = [r for r in records if r["metrics"].get(metric.name) == best["metrics"][metric.name]]
        return next((r for r in tied if axis is not None and r["values"][axis] == self.base.get(axis)), tied[0])


def read_records(sweep_dir: Path) -> dict[str, dict]:
    """{point name: record} of every finished point under `sweep_dir`."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep_dir.glob(f"*/{RECORD}"))}


def benchmarks(metrics: list[Metric]) -> list[str]:
    """The evaluation benchmarks the metrics name (`<benchmark>/<key>` of results.json), in order."""
    return list(dict.fromkeys(m.name.split("/")[0] for m in metrics if m.name.split("/")[0] in BENCHMARKS))


def final_values(output_dir: Path, names: list[str]) -> dict[str, float | None]:
    """Each metric's value for a finished point: the last logged value in its metrics.jsonl, or for
    `<benchmark>/<key>` the key of its eval/results.json (scripts/evaluate.py); None: not there."""
    values: dict[str, float | None] = dict.fromkeys(names)
    for line in read_metrics(output_dir / "metrics.jsonl"):
        values.update({n: line[n] for n in names if n in line})
    results = output_dir / "eval" / "results.json"
    evaluated = json.loads(results.read_text()).get("benchmarks", {}) if results.exists() else {}
    for name in names:
        benchmark, _, key = name.partition("/")
        if benchmark in BENCHMARKS:
            values[name] = evaluated.get(benchmark, {}).get(key)
    return values


def record_point(point: Point, output_dir: Path, metrics: list[Metric], seconds: float) -> dict:
    record = {"point": point.name, "values": point.values, "axis": point.axis, "seconds": round(seconds, 1),
              "output_dir": str(output_dir), "metrics": final_values(output_dir, [m.name for m in metrics])}
    write_json(output_dir / RECORD, record)
    return record


def missing_metrics(record: dict, metrics: list[Metric]) -> list[Metric]:
    """Metrics asked for that a finished point's record does not hold yet (added to the sweep later)."""
    return [m for m in metrics if m.name not in record["metrics"]]


def check_definition(sweep_dir: Path, definition: dict) -> None:
    """A sweep folder holds the points of one run definition: refuse to mix in points run otherwise."""
    path = sweep_dir / DEFINITION
    if path.exists():
        old = json.loads(path.read_text())
        differences = [f"  {k}: {old.get(k)!r} then, {definition[k]!r} now" for k in DEFINING
                       if old.get(k) != definition[k]]
        if differences:
            raise ConfigError(f"{sweep_dir} holds a sweep run with other settings:\n" + "\n".join(differences)
                              + f"\nUse another --sweep_dir for this one, or delete {sweep_dir} to start over.")
    write_json(path, definition)


def chosen_values(spec: SweepSpec, records: dict[str, dict], upto: str | None = None) -> dict[str, Any]:
    """Sequential search: the best value of each key before `upto` (all keys: None), from finished
    points. A key whose points are not all finished, or logged no metric, stops with a message."""
    chosen: dict[str, Any] = {}
    for axis in spec.grid:
        if axis == upto:
            break
        points = spec.axis_points(axis, chosen)
        missing = [p.name for p in points if p.name not in records]
        if missing:
            raise ConfigError(f"sweep: {axis} is not tuned yet (unfinished: {', '.join(missing)})")
        best = spec.choose([records[p.name] for p in points], axis)
        if best is None:
            raise ConfigError(f"sweep: no {axis} point logged {spec.metrics[0].name}; the sweep needs a held-out "
                              "split and an evaluation (eval_strategy not 'no')")
        chosen[axis] = best["values"][axis]
    return chosen


def rows(spec: SweepSpec, records: dict[str, dict]) -> list[tuple[str, Point, dict | None]]:
    """(group, point, record or None) in tuning order: per key for sequential search, as far as the
    finished points allow; every combination for grid search."""
    if spec.search == "grid":
        return [("grid", p, records.get(p.name)) for p in spec.grid_points()]
    out, chosen = [], {}
    for axis in spec.grid:
        points = spec.axis_points(axis, chosen)
        out += [(axis, p, records.get(p.name)) for p in points]
        best = spec.choose([records[p.name] for p in points if p.name in records], axis)
        if best is None or len([p for p in points if p.name in records]) < len(points):
            break
        chosen[axis] = best["values"][axis]
    return out


def best_point(spec: SweepSpec, records: dict[str, dict]) -> tuple[dict | None, bool]:
    """(the sweep's answer so far, whether the search is complete): sequential, the best of the last
    key tuned; grid, the best of every finished point."""
    table = rows(spec, records)
    group = table[-1][0] if table else None
    complete = all(r is not None for _, _, r in table) and group in ("grid", list(spec.grid)[-1])
    finished = [r for g, _, r in table if r is not None and (spec.search == "grid" or g == group)]
    return spec.choose(finished, None if spec.search == "grid" else group), complete


def markdown(spec: SweepSpec, records: dict[str, dict], title: str) -> str:
    metric = spec.metrics[0]
    table = rows(spec, records)
    keys, names = list(spec.grid), [m.name for m in spec.metrics]
    best_per_group = {}
    for group in dict.fromkeys(g for g, _, _ in table):
        best = spec.choose([r for g, _, r in table if g == group and r is not None], None if group == "grid" else group)
        best_per_group[group] = best["point"] if best else None
    ties = " A tie keeps the recipe's value of the key being tuned." if spec.search == "sequential" else ""
    lines = [f"# {title}", "", f"Search: {spec.search} over {', '.join(keys)}; chosen by {metric}.{ties}", "",
             "| tunes | " + " | ".join(keys) + " | " + " | ".join(names) + " | time (s) | point |",
             "|---|" + "---|" * (len(keys) + len(names) + 2)]
    for group, point, record in table:
        mark = " **(best)**" if record and best_per_group[group] == point.name else ""
        cells = [shown(point.values[k]) for k in keys]
        if record is None:
            cells += ["not run yet"] + ["—"] * (len(names) - 1) + ["—"]
        else:
            cells += [("—" if record["metrics"].get(n) is None else f"{record['metrics'][n]:.4g}") for n in names]
            cells.append(f"{record['seconds']:.0f}")
        lines.append(f"| {group} | " + " | ".join(cells) + f" | `{point.name}`{mark} |")
    best, complete = best_point(spec, records)
    if best is not None:
        lines += ["", f"{'Best' if complete else 'Best so far'}: `{best['point']}` ({metric.name} "
                      f"{best['metrics'][metric.name]:.4g}): " + ", ".join(f"{k} {shown(v)}" for k, v in
                                                                          best["values"].items())]
    return "\n".join(lines) + "\n"


def figure(spec: SweepSpec, records: dict[str, dict], title: str):
    """One panel per metric (rows) and tuned key (columns): the metric against the key's values,
    each value labelled, the best point of each panel circled; points not run yet are absent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = [(g, p, r) for g, p, r in rows(spec, records) if r is not None]
    keys = list(spec.grid)
    fig, axes = plt.subplots(len(spec.metrics), len(keys), squeeze=False,
                             figsize=(max(6.5, 4.2 * len(keys)), 3.4 * len(spec.metrics) + 0.9))
    for row, metric in enumerate(spec.metrics):
        for col, key in enumerate(keys):
            ax = axes[row][col]
            # sequential: the points tuning this key; grid: every point, one line per setting of the others
            candidates = [(p, r) for g, p, r in table if spec.search == "grid" or g == key]
            series: dict[str, list] = {}
            for p, r in candidates:
                label = ", ".join(f"{SHORT.get(k, k)} {shown(p.values[k])}" for k in keys if k != key)
                series.setdefault(label, []).append((p, r))
            for label, points in series.items():
                points = sorted((pr for pr in points if pr[1]["metrics"].get(metric.name) is not None),
                                key=lambda pr: pr[0].values[key])
                if not points:
                    continue
                xs = [p.values[key] for p, _ in points]
                ys = [r["metrics"][metric.name] for _, r in points]
                ax.plot(xs, ys, marker="o", label=label or None)
                for x, y in zip(xs, ys):
                    ax.annotate(f"{y:.3g}", (x, y), xytext=(0, 5), textcoords="offset points", ha="center",
                                fontsize=8)
                best = spec.choose([r for _, r in points], key) if metric == spec.metrics[0] else metric.best(
                    [r for _, r in points])
                ax.scatter([best["values"][key]], [best["metrics"][metric.name]], s=160, facecolors="none",
                           edgecolors="red", zorder=3)
            numeric = [v for v in spec.grid[key] if isinstance(v, (int, float))]
            if numeric and min(numeric) > 0 and max(numeric) / min(numeric) >= 10:
                ax.set_xscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel(metric.name)
            ax.set_title(f"{metric.name} vs {key}", fontsize=10)
            ax.margins(x=0.1, y=0.2)
            if any(not line.get_label().startswith("_") for line in ax.lines):
                ax.legend(fontsize=7, title="others at", title_fontsize=7)
            elif not ax.lines:
                ax.text(0.5, 0.5, "no finished point", ha="center", va="center", transform=ax.transAxes,
                        color="gray")
    fig.suptitle(f"{title}\nchosen by {spec.metrics[0]}; red circle: best in the panel", fontsize=10)
    fig.tight_layout()
    return fig


def report(spec: SweepSpec, sweep_dir: Path, title: str) -> str:
    """sweep.md and sweep.png in `sweep_dir` from the finished points; the markdown."""
    import matplotlib.pyplot as plt

    records = read_records(sweep_dir)
    text = markdown(spec, records, title)
    write_atomic(sweep_dir / "sweep.md", text)
    fig = figure(spec, records, title)
    fig.savefig(sweep_dir / "sweep.png", dpi=100)
    plt.close(fig)
    return text


def slurm_script(name: str, gpus: int, workdir: Path, log_dir: Path, command: list[str], task: str | None,
                 tasks: int = 1) -> str:
    """An sbatch script on one node with `gpus` GPUs (0: none asked) running `command` in `workdir`; with `task`, an
    array of `tasks` jobs, job i adding `--task <task>:i`."""
    line = " ".join(shlex.quote(c) for c in command)
    array = [f"#SBATCH --array=0-{tasks - 1}"] if task else []
    log = f"{log_dir}/%x-%a.log" if task else f"{log_dir}/%x.log"
    gpu_line = [f"#SBATCH --gpus-per-node={gpus}"] if gpus else []
    return "\n".join([
        "#!/usr/bin/env bash", f"#SBATCH --job-name={name}", *array, "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1", *gpu_line, f"#SBATCH --output={log}",
        "set -euo pipefail", f"cd {shlex.quote(str(workdir))}",
        f'exec {line}' + (f' --task "{task}:$SLURM_ARRAY_TASK_ID"' if task else ""), ""])
