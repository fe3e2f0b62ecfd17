"""What `make train` prints when every stage is done: each stage's time, final metrics, and where its
model, curves and metrics are."""
from __future__ import annotations

from pathlib import Path

from simpo_recipes.training.reporting import final_metrics, read_metrics


def stage_summary(label: str, seconds: float, output_dir: str | Path) -> list[str]:
    out = Path(output_dir)
    lines = read_metrics(out / "metrics.jsonl")
    rows = [f"  {label}: {seconds:.0f} s"]
    for split, prefix in (("train", ""), ("held-out", "eval_")):
        metrics = final_metrics(lines, prefix)
        if metrics:
            rows.append(f"    {split:<9} " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    rows.append(f"    model     {out}" + ("" if (out / "config.json").exists() else " (missing)"))
    rows.append(f"    files     training_curves.png, metrics.jsonl, README.md (model card) in {out}")
    return rows


def run_summary(name: str, stages: list[tuple[str, float, str]]) -> str:
    """stages: (label, seconds, output_dir) of each finished stage, in order."""
    total = sum(seconds for _, seconds, _ in stages)
    body = [line for label, seconds, out in stages for line in stage_summary(label, seconds, out)]
    return "\n".join([f"[{name}] done in {total:.0f} s:", *body])
