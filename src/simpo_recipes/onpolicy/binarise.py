"""Binarise scored samples: chosen = the best answer, rejected = the worst, in the released
on-policy datasets' schema; what cannot make a pair is dropped and counted, never kept.

A prompt is dropped when
- all its samples are identical: there is nothing to prefer;
- fewer than two samples have a score (the others were longer than the reward model reads);
- the best and worst scores tie: the pair would carry no preference (the reference scripts then
  trained chosen == rejected);
- its chosen or its rejected sample was truncated (hit max_new_tokens without an end of turn):
  training on it would teach the model to stop mid-answer, or to avoid merely long answers;
- the pair fails the preference stage's own row check (an empty answer, chosen == rejected), so
  the stage reads every kept row.
Ties among equally best (or worst) samples go to the first in seed order.
"""
from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from simpo_recipes.data.preprocess import RowError, split_preference
from simpo_recipes.files import write_atomic, write_json, write_jsonl

IDENTICAL, UNSCORED, TIE = "all samples identical", "fewer than 2 samples scored", "best and worst scores tie"
TRUNCATED_CHOSEN, TRUNCATED_REJECTED = "chosen truncated", "rejected truncated"
COLUMNS = ("prompt_id", "prompt", "chosen", "rejected", "all_generated_responses", "all_rm_scores")


def binarise_prompt(prompt: dict, samples: list[dict], scores: list[float | None]) -> tuple[dict | None, str]:
    """(row in the released schema, "") or (None, why it is dropped)."""
    responses = [s["output"] for s in samples]
    if len({r.strip() for r in responses}) == 1:
        return None, IDENTICAL
    scored = [i for i, s in enumerate(scores) if s is not None]
    if len(scored) < 2:
        return None, UNSCORED
    best = max(scored, key=lambda i: scores[i])  # max/min keep the first of equals: seed order
    worst = min(scored, key=lambda i: scores[i])
    if scores[best] == scores[worst]:
        return None, TIE
    if samples[best]["truncated"]:
        return None, TRUNCATED_CHOSEN
    if samples[worst]["truncated"]:
        return None, TRUNCATED_REJECTED
    user = {"role": "user", "content": prompt["prompt"]}
    row = {"prompt_id": prompt["prompt_id"], "prompt": prompt["prompt"],
           "chosen": [user, {"role": "assistant", "content": responses[best]}],
           "rejected": [user, {"role": "assistant", "content": responses[worst]}],
           "all_generated_responses": responses, "all_rm_scores": scores}
    try:
        split_preference(row)
    except RowError as e:
        return None, str(e)
    return row, ""


def binarise(prompts: list[dict], samples: dict[str, list[dict]], scores: dict[str, list[float | None]]) -> dict:
    """{"rows": kept rows, "dropped": {reason: n}, "margins": chosen − rejected score per kept row,
    "truncated_samples": n} for one split."""
    rows, dropped, margins = [], Counter(), []
    for prompt in prompts:
        pid = prompt["prompt_id"]
        row, reason = binarise_prompt(prompt, samples[pid], scores[pid])
        if row is None:
            dropped[reason] += 1
            continue
        rows.append(row)
        margins.append(max(s for s in scores[pid] if s is not None) - min(s for s in scores[pid] if s is not None))
    truncated = sum(s["truncated"] for pid in samples for s in samples[pid])
    return {"rows": rows, "dropped": dict(dropped.most_common()), "margins": margins, "truncated_samples": truncated}


def margin_summary(margins: list[float]) -> dict:
    if not margins:
        return {"n": 0}
    cuts = statistics.quantiles(margins, n=10, method="inclusive") if len(margins) > 1 else [margins[0]] * 9
    return {"n": len(margins), "min": min(margins), "p10": cuts[0], "median": statistics.median(margins),
            "mean": statistics.fmean(margins), "p90": cuts[-1], "max": max(margins)}


def write_dataset(output_dir: str | Path, results: dict[str, dict], meta: dict) -> dict:
    """<split>.jsonl per split (what dataset_mixer reads), report.json, report.md and margins.png."""
    out = Path(output_dir)
    report = dict(meta, splits={})
    for split, result in results.items():
        write_jsonl(out / f"{split}.jsonl", result["rows"])
        n_prompts = len(result["rows"]) + sum(result["dropped"].values())
        report["splits"][split] = {"prompts": n_prompts, "kept": len(result["rows"]), "dropped": result["dropped"],
                                   "truncated_samples": result["truncated_samples"],
                                   "margin": margin_summary(result["margins"])}
    write_json(out / "report.json", report)
    write_atomic(out / "report.md", report_markdown(report))
    plot_margins({split: r["margins"] for split, r in results.items()}, report, out / "margins.png")
    return report


def report_markdown(report: dict) -> str:
    splits = report["splits"]
    reasons = sorted({r for s in splits.values() for r in s["dropped"]})
    lines = [f"# On-policy preference data: {report['output_dir']}", "",
             f"policy `{report['model']}`, reward model `{report['reward_model']}` ({report['reward_type']}), "
             f"seeds {report['seeds']}, temperature {report['temperature']}, top_p {report['top_p']}, "
             f"max_new_tokens {report['max_new_tokens']}", "",
             "| " + " | ".join(["split", "prompts", "kept pairs", *(f"dropped: {r}" for r in reasons),
                                "truncated samples", "margin min / median / mean / max"]) + " |",
             "|" + "---|" * (5 + len(reasons))]
    for split, s in splits.items():
        m = s["margin"]
        margin = "—" if not m["n"] else f"{m['min']:.3g} / {m['median']:.3g} / {m['mean']:.3g} / {m['max']:.3g}"
        cells = [split, s["prompts"], s["kept"], *(s["dropped"].get(r, 0) for r in reasons), s["truncated_samples"], margin]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    empty = [split for split, s in splits.items() if not s["kept"]]
    if empty:
        lines += ["", f"No pair was kept in {', '.join(empty)}: the preference stage cannot read an empty split "
                      "(more prompts or seeds, a larger max_new_tokens, or leave the split out of dataset_splits)."]
    return "\n".join(lines) + "\n"


def plot_margins(margins: dict[str, list[float]], report: dict, path: Path) -> None:
    """Left: histogram of chosen − rejected score per split; right: kept and dropped prompts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, bars) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    for split, values in margins.items():
        if values:
            hist.hist(values, bins=30, alpha=0.6,
                      label=f"{split}: {len(values)} pairs, median {statistics.median(values):.3g}")
    hist.set_title("Score margin of kept pairs (chosen − rejected)")
    hist.set_xlabel(f"reward margin ({report['reward_model']})")
    hist.set_ylabel("pairs")
    if any(margins.values()):
        hist.legend()
    labels, counts = [], []
    for split, s in report["splits"].items():
        for what, n in [("kept", s["kept"]), *s["dropped"].items()]:
            labels.append(f"{split}: {what}")
            counts.append(n)
    bars.barh(labels[::-1], counts[::-1], color="tab:gray")
    for y, n in enumerate(counts[::-1]):
        bars.text(n, y, f" {n}", va="center")
    bars.set_xlim(0, 1.15 * max(counts + [1]))  # room for the value labels
    bars.set_title("Prompts kept and dropped")
    bars.set_xlabel("prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
