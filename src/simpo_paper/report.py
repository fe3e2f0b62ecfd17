"""docs/paper_reproduction.md and its figures, from one `make paper` run's results.json alone: every
number in them is read from there, and each of the paper's claims is checked against those numbers."""
from __future__ import annotations

import itertools
from pathlib import Path

from simpo_paper.measure import spearman
from simpo_recipes.files import read_jsonl, write_atomic

PAPER_WIN = {"rrhf": 11.6, "slic": 10.9, "dpo": 15.1, "ipo": 11.8, "cpo": 9.8, "kto": 13.1, "orpo": 14.7, "rdpo": 17.4,
             "simpo": 21.5, "simpo-no-ln": 11.9, "simpo-gamma0": 16.8}  # Mistral-Base AlpacaEval 2 LC (PAPER.md)


def pair_lengths(path: Path) -> dict:
    """How many training pairs have the right (chosen) answer longer, shorter or as long as the wrong one (words)."""
    counts = {"chosen longer": 0, "chosen shorter": 0, "same length": 0}
    for row in read_jsonl(path):
        w, lo = (len(row[k][-1]["content"].split()) for k in ("chosen", "rejected"))
        counts["chosen longer" if w > lo else "chosen shorter" if w < lo else "same length"] += 1
    return counts


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def _rho(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.2f}"


def _less(saved: float) -> str:
    return f"SimPO {saved:.0%} less" if saved >= 0 else f"SimPO {-saved:.0%} more"


def _win(results: dict, name: str) -> float | None:
    return results["test"]["models"][name]["win_rate_vs_baseline"]


def _noise(results: dict, a: str, b: str) -> str:
    """A note when two win rates differ by less than twice the standard error of their difference
    (alpaca_eval's standard errors, taken as independent)."""
    models = results["test"]["models"]
    se = [models[m].get("alpaca_eval", {}).get("standard_error") for m in (a, b)]
    if None in se:
        return ""
    two_se = 2 * (se[0] ** 2 + se[1] ** 2) ** 0.5 / 100
    gap = abs(_win(results, a) - _win(results, b))
    return f" — within noise: {gap:.1%} apart, 2 s.e. {two_se:.1%}" if gap < two_se else ""


def _gamma_points(results: dict) -> list[tuple[float, str, dict]]:
    """(γ/β, test model name, run record) of the γ sweep, by γ."""
    base = results["base_gamma_beta_ratio"]
    points = [(float(g), "simpo" if float(g) == base else f"simpo-gbr{g}", r) for g, r in results["gamma"].items()]
    return sorted(points)


def claims(results: dict) -> list[tuple[str, str, str, str]]:
    """(claim, the paper's numbers, ours, verdict) for each claim whose models this run trained."""
    models, out = results["test"]["models"], []
    baselines = [m for m in results["order"] if m not in ("simpo", "simpo-no-ln", "simpo-gamma0")]
    label = results["labels"]
    simpo = models["simpo"]
    if baselines:
        best = max(baselines, key=lambda m: _win(results, m))
        ok = all(_win(results, "simpo") > _win(results, m) for m in baselines)
        out.append(("SimPO is ahead of every baseline on win rate",
                    "AlpacaEval 2 LC, Mistral-Base: SimPO 21.5, best baseline R-DPO 17.4",
                    f"win rate vs SFT: SimPO {_pct(simpo['win_rate_vs_baseline'])}, best baseline {label[best]} "
                    f"{_pct(_win(results, best))}{_noise(results, 'simpo', best)}",
                    "reproduced" if ok else "not reproduced"))
    if "simpo-no-ln" in models:
        no_ln = models["simpo-no-ln"]
        longer, lower = no_ln["mean_length"] > simpo["mean_length"], no_ln["win_rate_vs_baseline"] < simpo["win_rate_vs_baseline"]
        out.append(("Removing length normalisation lengthens the answers and lowers the win rate",
                    "AlpacaEval 2 LC 21.5 → 11.9 (Mistral-Base); \"long and repetitive\" answers",
                    f"mean length {simpo['mean_length']:.2f} → {no_ln['mean_length']:.2f} tokens; win rate "
                    f"{_pct(simpo['win_rate_vs_baseline'])} → {_pct(no_ln['win_rate_vs_baseline'])}"
                    f"{_noise(results, 'simpo', 'simpo-no-ln')}",
                    "reproduced" if longer and lower else "partly reproduced (" + ("longer" if longer else "not longer")
                    + ", " + ("lower win rate" if lower else "win rate not lower") + ")" if longer or lower
                    else "not reproduced"))
        rho_ln, rho_no = (results["length_logprob"][m]["spearman"] for m in ("simpo", "simpo-no-ln"))
        higher = rho_ln is not None and rho_no is not None and rho_no > rho_ln
        verdict = ("reproduced" if higher and rho_no > 0 else "partly reproduced (higher without, but not a "
                   "positive correlation: longer answers are not favoured)" if higher else "not reproduced")
        out.append(("Without length normalisation, mean log-prob follows length more closely",
                    "Spearman(length, mean log-prob) 0.82 without, 0.34 with",
                    f"{_rho(rho_no)} without, {_rho(rho_ln)} with", verdict))
    if "simpo-gamma0" in models:
        g0 = models["simpo-gamma0"]
        ok = g0["win_rate_vs_baseline"] < simpo["win_rate_vs_baseline"]
        out.append(("A target margin γ > 0 helps: γ = 0 lowers the win rate", "AlpacaEval 2 LC 21.5 → 16.8 (Mistral-Base)",
                    f"win rate {_pct(simpo['win_rate_vs_baseline'])} → {_pct(g0['win_rate_vs_baseline'])}"
                    f"{_noise(results, 'simpo', 'simpo-gamma0')}",
                    "reproduced" if ok else "not reproduced"))
    # a win-rate comparison that holds only within the noise says so in its verdict
    out = [(a, b, d, v + " in direction only (within noise)" if v == "reproduced" and "within noise" in d else v)
           for a, b, d, v in out]
    points = _gamma_points(results)
    gammas = [g for g, _, _ in points]
    accuracy = [r["heldout_reward_accuracy"] for _, _, r in points]
    wins = [models[name]["win_rate_vs_baseline"] for _, name, _ in points]
    rises = all(b >= a for a, b in itertools.pairwise(accuracy)) and accuracy[-1] > accuracy[0]
    out.append(("Held-out reward accuracy rises with γ", "rises with γ (paper, γ ablation)",
                ", ".join(f"γ/β {g:g}: {a:.1%}" for g, a in zip(gammas, accuracy))
                + f" (Spearman with γ {_rho(spearman(gammas, accuracy))})", "reproduced" if rises else "not reproduced"))
    peak = max(range(len(wins)), key=wins.__getitem__)
    ok = 0 < peak < len(wins) - 1 and wins[0] < wins[peak] and wins[-1] < wins[peak]
    out.append(("Win rate rises, then falls, as γ grows", "rises, then falls (paper, γ ablation)",
                ", ".join(f"γ/β {g:g}: {w:.1%}" for g, w in zip(gammas, wins)),
                "reproduced" if ok else "not reproduced" + (" (two γ values cannot show it)" if len(wins) < 3 else "")))
    cost = results["efficiency"]
    if "SimPO" in cost and "DPO (live reference)" in cost:
        s, d = cost["SimPO"], cost["DPO (live reference)"]
        time_saved, memory_saved = 1 - s["cpu_step_s"] / d["cpu_step_s"], 1 - s["training_adds_mib"] / d["training_adds_mib"]
        ok = time_saved > 0 and memory_saved > 0
        out.append(("SimPO is faster and leaner than DPO", "≈ 20% less run time, ≈ 10% less peak GPU memory (8×H100)",
                    f"CPU time per step {1000 * s['cpu_step_s']:.1f} vs {1000 * d['cpu_step_s']:.1f} ms "
                    f"({_less(time_saved)}); memory added by training {s['training_adds_mib']:.1f} vs "
                    f"{d['training_adds_mib']:.1f} MiB RSS ({_less(memory_saved)}); against DPO with a live reference",
                    "reproduced" if ok else "not reproduced"))
    return out


def _names(results: dict) -> list[str]:
    return ["sft", *results["order"]]


def table4(results: dict) -> list[str]:
    models, label = results["test"]["models"], results["labels"]
    head = ["method", "learning rate (chosen)", "validation accuracy", "test accuracy", "win rate vs SFT",
            "alpaca_eval win rate vs SFT", "mean length (tokens)", "held-out reward accuracy",
            "Spearman(length, mean log-prob)", "paper: AlpacaEval 2 LC (Mistral-Base)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in _names(results):
        m, run = models[name], results["tuned"].get(name)
        handoff = m.get("alpaca_eval")
        cells = ["SFT" if name == "sft" else label[name],
                 "—" if run is None else f"{run['learning_rate']:g}",
                 "—" if run is None else _pct(run["validation"]["accuracy"]),
                 _pct(m["accuracy"]), _pct(m["win_rate_vs_baseline"]),
                 "—" if handoff is None else f"{handoff['win_rate']:.1f}%", f"{m['mean_length']:.2f}",
                 "—" if run is None else _pct(run["heldout_reward_accuracy"]),
                 _rho(results["length_logprob"][name]["spearman"]),
                 {"sft": "8.4"}.get(name, str(PAPER_WIN.get(name, "—")))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def tuning_table(results: dict) -> list[str]:
    lrs = results["config"]["learning_rates"]
    lines = ["| method | settings (recipes/tiny.yaml) | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | chosen |",
             "|---|---|" + "---|" * (len(lrs) + 1)]
    for name in results["order"]:
        settings = {k: v for k, v in results["method_settings"][name].items() if k != "source"}
        cells = []
        for lr in lrs:
            run = next(r for r in results["runs"].values() if r["method"] == name and r["learning_rate"] == lr
                       and r["gamma_beta_ratio"] is None)
            cells.append(f"{run['validation']['accuracy']:.1%}")
        shown_settings = ", ".join(f"{k} {v}" for k, v in settings.items()) or "training_configs/tiny-simpo.yaml"
        lines.append(f"| {results['labels'][name]} | {shown_settings} | " + " | ".join(cells)
                     + f" | {results['tuned'][name]['learning_rate']:g} |")
    return lines


def ablation_table(results: dict) -> list[str]:
    models, label = results["test"]["models"], results["labels"]
    lines = ["| variant | win rate vs SFT | test accuracy | mean length (tokens) | Spearman(length, mean log-prob) | "
             "paper: AlpacaEval 2 LC (Mistral-Base) |", "|---|---|---|---|---|---|"]
    for name in (m for m in ("simpo", "simpo-no-ln", "simpo-gamma0") if m in models):
        m = models[name]
        lines.append(f"| {label[name]} | {_pct(m['win_rate_vs_baseline'])} | {_pct(m['accuracy'])} | "
                     f"{m['mean_length']:.2f} | {_rho(results['length_logprob'][name]['spearman'])} | "
                     f"{PAPER_WIN[name]} |")
    return lines


def gamma_table(results: dict) -> list[str]:
    models = results["test"]["models"]
    lines = ["| γ/β | test accuracy | win rate vs SFT | mean length | held-out reward accuracy | held-out reward margin |",
             "|---|---|---|---|---|---|"]
    for g, name, run in _gamma_points(results):
        m = models[name]
        lines.append(f"| {g:g} | {_pct(m['accuracy'])} | {_pct(m['win_rate_vs_baseline'])} | {m['mean_length']:.2f} | "
                     f"{_pct(run['heldout_reward_accuracy'])} | {run['heldout_reward_margin']:.2f} |")
    return lines


def efficiency_table(results: dict) -> list[str]:
    lines = ["| contender | steps | wall time per step (ms) | CPU time per step (ms; each round) | whole stage (s) | "
             "memory added by training (MiB) | process peak RSS (MiB) |", "|---|---|---|---|---|---|---|"]
    for name, r in results["efficiency"].items():
        lines.append(f"| {name} | {r['steps']:.0f} | {r['step_s'] * 1000:.1f} | "
                     f"{r['cpu_step_s'] * 1000:.1f} ({', '.join(f'{1000 * x:.1f}' for x in r['cpu_step_s_each'])}) | "
                     f"{r['stage_s']:.1f} | {r['training_adds_mib']:.1f} | {r['peak_rss_mib']:.0f} |")
    return lines


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bars(ax, labels: list[str], values: list[float], fmt: str, title: str, ylabel: str) -> None:
    bars = ax.bar(range(len(values)), values, color=["#999999" if lb == "SFT" else "#4477aa" for lb in labels])
    for bar, v in zip(bars, values):
        ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, v), xytext=(0, 2), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)


def figures(results: dict, folder: Path) -> list[Path]:
    plt = _plt()
    folder.mkdir(parents=True, exist_ok=True)
    models, label = results["test"]["models"], results["labels"]
    n = results["test"]["n_prompts"]
    names = _names(results)
    labels = ["SFT" if m == "sft" else label[m] for m in names]
    paths = []

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    _bars(axes[0], labels, [100 * (models[m]["win_rate_vs_baseline"] or 0.5) for m in names], "{:.1f}",
          "win rate vs SFT (%; SFT itself: 50)", "win rate (%)")
    _bars(axes[1], labels, [100 * models[m]["accuracy"] for m in names], "{:.1f}", "test accuracy (%)", "accuracy (%)")
    _bars(axes[2], labels, [models[m]["mean_length"] for m in names], "{:.2f}", "mean answer length", "tokens")
    fig.suptitle(f"Table 4 in miniature: each method at its chosen learning rate, {n} test prompts, program judge")
    fig.tight_layout()
    paths.append(folder / "table4.png")

    ablation = [m for m in ("simpo", "simpo-no-ln", "simpo-gamma0") if m in models]
    if len(ablation) > 1:
        fig2, axes2 = plt.subplots(1, 3, figsize=(11, 4))
        ab_labels = [label[m] for m in ablation]
        _bars(axes2[0], ab_labels, [100 * models[m]["win_rate_vs_baseline"] for m in ablation], "{:.1f}",
              "win rate vs SFT (%)", "win rate (%)")
        _bars(axes2[1], ab_labels, [100 * models[m]["accuracy"] for m in ablation], "{:.1f}", "test accuracy (%)",
              "accuracy (%)")
        _bars(axes2[2], ab_labels, [models[m]["mean_length"] for m in ablation], "{:.2f}", "mean answer length",
              "tokens")
        fig2.suptitle(f"Ablations of SimPO ({n} test prompts)")
        fig2.tight_layout()
        paths.append(folder / "ablation.png")
    else:
        fig2 = None

    points = _gamma_points(results)
    fig3, ax = plt.subplots(figsize=(6.5, 4.2))
    gammas = [g for g, _, _ in points]
    wins = [100 * models[name]["win_rate_vs_baseline"] for _, name, _ in points]
    accuracy = [100 * r["heldout_reward_accuracy"] for _, _, r in points]
    for ys, lb, marker in ((wins, "win rate vs SFT (test prompts)", "o"), (accuracy, "reward accuracy (held-out pairs)", "s")):
        ax.plot(gammas, ys, marker=marker, label=lb)
        for x, y in zip(gammas, ys):
            ax.annotate(f"{y:.1f}", (x, y), xytext=(0, 5), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xlabel("γ/β (β = 2.5)")
    ax.set_ylabel("%")
    ax.set_title("SimPO: win rate and reward accuracy against the target margin γ", fontsize=10)
    ax.legend(fontsize=8)
    ax.margins(y=0.15)
    fig3.tight_layout()
    paths.append(folder / "gamma.png")

    shown_models = [m for m in ("simpo", "simpo-no-ln") if m in results["length_logprob"]]
    fig4, axes4 = plt.subplots(1, len(shown_models), figsize=(max(8, 5.2 * len(shown_models)), 4.4), squeeze=False)
    for ax, name in zip(axes4[0], shown_models):
        points_ = results["length_logprob"][name]
        ax.scatter(points_["lengths"], points_["mean_logps"], s=10, alpha=0.5)
        ax.set_title(f"{label[name]}: Spearman ρ = {_rho(points_['spearman'])}", fontsize=10)
        ax.set_xlabel("answer length (tokens, end of turn included)")
        ax.set_ylabel("mean token log-prob of the answer")
    fig4.suptitle(f"Answer length against mean token log-prob:\neach model's own greedy answers to {n} test prompts",
                  fontsize=10)
    fig4.tight_layout()
    paths.append(folder / "length_logprob.png")

    cost = results["efficiency"]
    fig5 = None
    if cost:
        fig5, axes5 = plt.subplots(1, 3, figsize=(13, 4.2))
        names5 = list(cost)
        _bars(axes5[0], names5, [1000 * cost[c]["step_s"] for c in names5], "{:.1f}", "wall time per step", "ms")
        _bars(axes5[1], names5, [1000 * cost[c]["cpu_step_s"] for c in names5], "{:.1f}", "CPU time per step", "ms")
        _bars(axes5[2], names5, [cost[c]["training_adds_mib"] for c in names5], "{:.1f}",
              "memory added by training (peak RSS − start)", "MiB")
        steps, rounds = cost[names5[0]]["steps"], cost[names5[0]]["rounds"]
        fig5.suptitle(f"SimPO against DPO: {steps:.0f} steps each, own process, CPU; median of {rounds} rounds",
                      fontsize=10)
        fig5.tight_layout()
        paths.append(folder / "efficiency.png")

    for f, path in zip([f for f in (fig, fig2, fig3, fig4, fig5) if f is not None], paths):
        f.savefig(path, dpi=110)
        plt.close(f)
    return paths


def markdown(results: dict, figure_paths: list[Path], docs_dir: Path) -> str:
    c = results["config"]
    data = results["data"]
    total = sum(data.values())
    rel = {p.name: p.relative_to(docs_dir).as_posix() for p in figure_paths}
    verdicts = claims(results)
    lines = [
        "# SimPO's comparisons at tiny scale (`make paper`)", "",
        f"Written by `make paper` from `{c['output_dir']}/results.json`; every number below comes from that run "
        f"(seed {c['seed']}; {results['wall_seconds'] / 60:.1f} min for the pipeline itself).", "",
        "## The claims", "",
        "| claim | paper | here | verdict |", "|---|---|---|---|",
        *(f"| {a} | {b} | {d} | **{v}** |" for a, b, d, v in verdicts), "",
        "## Setup", "",
        f"- Task: the demo's digit tasks (`simpo_demo.task`), judged by program. {c['n_prefs']} training pairs, "
        f"one epoch. `longer_chosen_share` {c['longer_chosen_share']}: that share of the sort and reverse pairs has "
        "the longer answer right; max pairs (a one-digit answer has no shorter wrong one) always have the "
        "longer, chattering answer wrong. Over all pairs: "
        + ", ".join(f"{k} {v} ({v / total:.0%})" for k, v in data.items()) + " (in words).",
        "- Every method starts from the demo's SFT model (`make demo`'s `outputs/tiny/sft`), with the settings of "
        "`recipes/tiny.yaml`'s `methods` (the objectives' defaults, not tuned).",
        f"- Tuning rule, the same for every method: one run per learning rate in {c['learning_rates']}; the run "
        f"with the best program-judge accuracy on {c['n_validation']} validation prompts (disjoint from the test "
        "prompts) is kept, a tie keeping the smaller rate. The test prompts are never used to choose.",
        f"- Test: the demo's {results['test']['n_prompts']} held-out prompts, greedy answers; win rate vs SFT = "
        "(wins + ½ ties) / prompts, by the program; the same comparison through `alpaca_eval evaluate` with the "
        "program as the judge on 127.0.0.1 (the demo's hand-off) must give the same number.",
        "- Held-out reward accuracy: share of the preference test pairs where the method's own reward ranks "
        "the right answer first, after training.",
        "- Spearman(length, mean log-prob): over each model's own test answers, scored by that model.",
        "",
        "## Table 4 in miniature (paper's row order)", "", *table4(results), "",
        f"![Table 4 in miniature]({rel['table4.png']})", "",
        "## Chosen learning rates (validation accuracy per rate)", "", *tuning_table(results), "",
    ]
    if "ablation.png" in rel:
        lines += ["## Ablations", "", *ablation_table(results), "", f"![ablations]({rel['ablation.png']})", ""]
    lines += ["## γ sweep (SimPO at its chosen learning rate)", "", *gamma_table(results), "",
              f"![gamma]({rel['gamma.png']})", "",
              "## Length against log-probability", "", f"![length vs log-prob]({rel['length_logprob.png']})", ""]
    if results["efficiency"]:
        lines += ["## Cost: SimPO against DPO", "",
                  f"Each contender trains in a process of its own at its chosen learning rate, taking turns "
                  f"with the others for {next(iter(results['efficiency'].values()))['rounds']} rounds; the table "
                  "shows the median over the rounds. Time per step is "
                  "the median step after the first (the bench's StepTimer); the claim is judged on CPU time, "
                  "which moves less than wall time on a shared machine. Memory is what training adds to the "
                  "process's RSS (sampled every millisecond; CPU: no GPU memory to read). DPO with a live "
                  "reference keeps a second model and runs it every step, as in the paper; this repository's "
                  "default caches the reference log-probs in one pass before training instead (counted in its "
                  "whole-stage time). On a 2-core machine shared with other work the times are noisy and inflated.",
                  "",
                  *efficiency_table(results), ""]
        parameters = next(iter(results["efficiency"].values())).get("parameters")
        if parameters:
            lines += [f"At {parameters:,} parameters, the reference model's fp32 weights are "
                      f"{4 * parameters / 2**20:.2f} MiB: what a live reference adds here is its forward pass and "
                      "its activations, not weights; the paper's saving at 7B parameters (a second 14 GB model) "
                      "has no counterpart of that size at this scale.", ""]
        lines += [f"![efficiency]({rel['efficiency.png']})", ""]
    lines += ["## What this does and does not show", "",
              "A 2-layer model with a 64-wide hidden state, a synthetic task and a program judge: a claim that "
              "reproduces here shows the mechanism can appear without scale; one that does not is reported as "
              "measured — the task was not tuned to make any claim hold.", ""]
    return "\n".join(lines)


def write(results: dict, config) -> list[Path]:
    """The document and its figures; returns their paths."""
    figure_paths = figures(results, config.figures_dir)
    doc = config.docs_dir / "paper_reproduction.md"
    write_atomic(doc, markdown(results, figure_paths, config.docs_dir))
    return [doc, *figure_paths]
