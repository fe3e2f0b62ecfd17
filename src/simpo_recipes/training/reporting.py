"""Per-run metrics as JSONL and training curves as PNG, resume-safe."""
from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

from simpo_recipes.files import read_jsonl, write_jsonl

PLOTTED = ("loss", "rewards/margins", "rewards/accuracies")


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


def plot_metrics(metrics_path: Path, png_path: Path) -> Path | None:
    """One panel per plotted metric that the run logged (train, and eval where present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = read_metrics(metrics_path)
    names = [n for n in PLOTTED if any(n in line for line in lines)]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for key, label in ((name, "train"), ("eval_" + name, "eval")):
            points = [(line["step"], line[key]) for line in lines if key in line]
            if points:
                ax.plot(*zip(*points), marker="o" if label == "eval" else None, label=label)
        ax.set_title(name)
        ax.set_xlabel("optimizer step")
        ax.legend()
    fig.suptitle(metrics_path.parent.name)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
