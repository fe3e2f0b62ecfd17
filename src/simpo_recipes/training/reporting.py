"""Per-run metrics as JSONL and training curves as PNG, resume-safe."""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from transformers import TrainerCallback

from simpo_recipes.files import read_jsonl, write_jsonl

# panel title -> (logged series, y label); a panel is drawn when the run logged one of its series
PANELS = {
    "loss": (("loss",), "loss"),
    "reward margin": (("rewards/margins",), "β·(ℓ_w − ℓ_l), mean over pairs"),
    "reward accuracy": (("rewards/accuracies",), "fraction of pairs with ℓ_w > ℓ_l"),
    "mean log-prob per token": (("logps/chosen", "logps/rejected"), "ℓ = log π(y|x) / |y|"),
}


class MetricsFileCallback(TrainerCallback):
    """Appends every log to `output_dir/metrics.jsonl`; on resume, lines after the checkpoint's
    step (and a last line torn by a kill) are removed first, so a crash and rerun neither loses nor
    duplicates a line."""

    def __init__(self, output_dir: str) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_jsonl(self.path, [line for line in read_metrics(self.path) if line["step"] <= state.global_step])

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_metrics(self.path, self.path.with_name("training_curves.png"))


def read_metrics(path: Path) -> list[dict]:
    """The lines of metrics.jsonl; a last line torn by a kill while it was written is left out."""
    return read_jsonl(path, torn_tail_ok=True) if path.exists() else []


FINAL_METRICS = ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


def final_metrics(lines: list[dict], prefix: str) -> dict[str, float]:
    """The last logged value of each of FINAL_METRICS (train: prefix "", held-out: "eval_")."""
    return {k: line[prefix + k] for line in lines for k in FINAL_METRICS if prefix + k in line}


def curves_figure(lines: list[dict], title: str):
    """One panel per logged quantity (two per row): train as lines, held-out eval as dashed lines with
    markers, each series' last value in its legend. None when nothing plottable was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {name: spec for name, spec in PANELS.items() if any(key in line for key in spec[0] for line in lines)}
    if not panels:
        return None
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.2 * columns, 3.6 * rows + 0.6), squeeze=False)
    for ax, (name, (keys, ylabel)) in zip(axes.flat, panels.items()):
        for color, key in enumerate(keys):
            for split, prefix, style in (("train", "", {}), ("eval", "eval_", {"marker": "o", "linestyle": "--"})):
                points = [(line["step"], line[prefix + key]) for line in lines if prefix + key in line]
                if points:
                    what = f"{split} {key.split('/')[-1]}" if len(keys) > 1 else split
                    ax.plot(*zip(*points), color=f"C{color}", label=f"{what} (last {points[-1][1]:.3g})", **style)
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_metrics(metrics_path: Path, png_path: Path) -> Path | None:
    """training_curves.png of a run folder, titled with the folder (and the starting model)."""
    import matplotlib.pyplot as plt

    config = metrics_path.with_name("run_config.yaml")
    start = yaml.safe_load(config.read_text()).get("model_name_or_path") if config.exists() else None
    title = f"Training curves of {metrics_path.parent}" + (f" (from {start})" if start else "")
    fig = curves_figure(read_metrics(metrics_path), title)
    if fig is None:
        return None
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
