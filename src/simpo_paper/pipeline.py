"""`make paper`, in order: the task's data, the demo's SFT model, every method trained at every learning
rate of the grid (the best on the validation prompts kept), SimPO's γ sweep, every kept model on the
test prompts (program judge, win rate against SFT through alpaca_eval, length against log-prob),
SimPO's and DPO's cost, then the document and figures. Every step's results are files under
output_dir: a rerun (or a run after a kill) redoes only what is missing."""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from simpo_demo.evaluate import cached_generations, evaluate
from simpo_demo.task import write_demo_data
from simpo_paper import report
from simpo_paper.config import ABLATIONS, TABLE4, PaperConfig
from simpo_paper.measure import length_vs_logprob
from simpo_paper.runs import RECORD, Run, stage_arguments, train_and_validate
from simpo_recipes.errors import UserError
from simpo_recipes.evaluation.generation import from_recipe
from simpo_recipes.files import read_jsonl, write_json, write_jsonl
from simpo_recipes.pipeline.launch import prepare_stage, recipe_topology
from simpo_recipes.pipeline.recipes import load_recipe, stage_commands, stage_config_value
from simpo_recipes.pipeline.sweep import shown


def say(message: str) -> None:
    print(f"[paper] {message}", flush=True)


def progress(done: int, total: int, record: dict, earlier: bool) -> None:
    took = "finished earlier" if earlier else f"{record['seconds']:.0f} s"
    say(f"run {done}/{total} {record['run']}: validation accuracy {record['validation']['accuracy']:.1%}, "
        f"length {record['validation']['mean_length']:.2f}, held-out reward accuracy "
        f"{record['heldout_reward_accuracy']:.1%} ({took})")


def choose(records: list[dict]) -> dict:
    """The tuning rule: the best validation accuracy; a tie keeps the smaller learning rate."""
    return max(records, key=lambda r: (r["validation"]["accuracy"], -r["learning_rate"]))


def train_sft(recipe, topology, max_steps: int) -> str:
    """The demo's SFT stage, launched as `make train` launches it (it skips itself once finished)."""
    (stage, (script, *args)), *_ = stage_commands(recipe, [f"--sft.max_steps={max_steps}"] if max_steps else [])
    _, command = prepare_stage(stage, script, args, topology)
    if subprocess.run(command).returncode != 0:
        raise UserError(f"the SFT stage failed (see above); rerunning make paper resumes it: {' '.join(command)}")
    return str(stage_config_value(stage, "output_dir"))


def efficiency(config: PaperConfig, recipe, runs: dict[str, dict], sft: str, prefs: Path, topology) -> dict:
    """SimPO's and DPO's time per step, whole stage time and memory, each in a process of its own, at its
    chosen learning rate for `efficiency_steps` steps. DPO twice: with a live reference model (the
    paper's setup) and with this repository's cached reference pass. The contenders take turns for
    `efficiency_rounds` rounds, so that a burst of other work on the machine hits them alike; each
    number is the median over the rounds."""
    contenders = {"SimPO": ("simpo", []), "DPO (live reference)": ("dpo", ["--reference_logps=live"]),
                  "DPO (cached reference)": ("dpo", [])}
    contenders = {label: c for label, c in contenders.items() if c[0] in runs}
    rounds: dict[str, list[dict]] = {label: [] for label in contenders}
    for i in range(config.efficiency_rounds):
        for label, (method, extra) in contenders.items():
            folder = config.output_dir / "efficiency" / f"{method}{'-live' if extra else ''}-{i}"
            record = folder.with_suffix(".json")
            if not record.exists():
                run = Run(method, runs[method]["learning_rate"])
                argv = stage_arguments(recipe, run, sft, prefs, folder, topology) + extra + [
                    f"--max_steps={config.efficiency_steps}", "--eval_strategy=no", "--fresh_start=true"]
                done = subprocess.run([sys.executable, "-m", "simpo_paper.measure", "efficiency", *argv],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    raise UserError(f"efficiency run {label} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
                write_json(record, json.loads(done.stdout.strip().splitlines()[-1]))
            rounds[label].append(json.loads(record.read_text()))
    results = {}
    for label, measured in rounds.items():
        results[label] = {k: statistics.median(m[k] for m in measured) for k in measured[0]} | {
            "rounds": len(measured), "cpu_step_s_each": [m["cpu_step_s"] for m in measured]}
        r = results[label]
        say(f"efficiency {label}: median of {len(measured)} rounds of {r['steps']:.0f} steps: {r['step_s'] * 1000:.1f} "
            f"ms/step wall, {r['cpu_step_s'] * 1000:.1f} ms/step CPU, stage {r['stage_s']:.1f} s, training adds "
            f"{r['training_adds_mib']:.1f} MiB")
    return results


def run_paper(config: PaperConfig) -> dict:
    start = time.monotonic()
    recipe = load_recipe(config.recipe)
    topology, _ = recipe_topology(recipe, None, None, False)
    settings = from_recipe(recipe.generation)
    n_runs = len(config.methods) * len(config.learning_rates) + len(config.gamma_beta_ratios) - 1
    say(f"{len(config.methods)} methods × {len(config.learning_rates)} learning rates + "
        f"{len(config.gamma_beta_ratios) - 1} more γ values = {n_runs} runs of {config.n_prefs} pairs; "
        f"{1 + len(config.methods) + len(config.gamma_beta_ratios) - 1} models on {config.n_test} test prompts")

    paths = write_demo_data(config.data_dir, n_prefs=config.n_prefs, n_validation=config.n_validation,
                            longer_chosen_share=config.longer_chosen_share, seed=config.seed)
    prefs = config.data_dir / "prefs"
    validation = read_jsonl(paths["validation"])
    # the demo's held-out prompts (same seed, same draws before the preference pairs), or their first n_test
    test = write_jsonl(config.output_dir / "test_prompts.jsonl", read_jsonl(paths["heldout"])[:config.n_test])
    sft = train_sft(recipe, topology, config.sft_max_steps)
    say(f"SFT model: {sft}")

    runs_dir, tuned, by_run = config.output_dir / "runs", {}, {}
    done = 0
    for method in config.methods:
        records = []
        for lr in config.learning_rates:
            earlier = (runs_dir / Run(method, lr).name / RECORD).exists()
            record = train_and_validate(recipe, Run(method, lr), sft, prefs, runs_dir, validation, settings, topology)
            done += 1
            records.append(record)
            by_run[record["run"]] = record
            progress(done, n_runs, record, earlier)
        tuned[method] = choose(records)
        say(f"{method}: learning rate {shown(tuned[method]['learning_rate'])} chosen")

    simpo_lr = tuned["simpo"]["learning_rate"]
    base_gamma = float(stage_config_value(recipe.stages[-1], "gamma_beta_ratio"))
    gamma_runs = {}
    for gamma in config.gamma_beta_ratios:
        if gamma == base_gamma:
            gamma_runs[gamma] = tuned["simpo"]
            continue
        run = Run("simpo", simpo_lr, gamma)
        earlier = (runs_dir / run.name / RECORD).exists()
        record = train_and_validate(recipe, run, sft, prefs, runs_dir, validation, settings, topology)
        done += 1
        gamma_runs[gamma] = by_run[record["run"]] = record
        progress(done, n_runs, record, earlier)

    models = {"sft": sft} | {m: tuned[m]["output_dir"] for m in config.methods}
    models |= {f"simpo-gbr{shown(g)}": r["output_dir"] for g, r in gamma_runs.items() if r is not tuned["simpo"]}
    say(f"test: {len(models)} models answer {config.n_test} prompts; alpaca_eval judges each against sft")
    summary = evaluate(models, test, config.output_dir / "test", settings)
    length_logprob = {}
    for name, path in models.items():
        generations = cached_generations(name, path, read_jsonl(test), settings, config.output_dir / "test")
        length_logprob[name] = length_vs_logprob(path, generations)
        rho = length_logprob[name]["spearman"]
        say(f"{name}: accuracy {summary['models'][name]['accuracy']:.1%}, mean length "
            f"{summary['models'][name]['mean_length']:.2f}, Spearman(length, mean log-prob) "
            + ("undefined" if rho is None else f"{rho:.2f}"))
    cost = efficiency(config, recipe, tuned, sft, prefs, topology)

    results = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "data": report.pair_lengths(prefs / "train.jsonl"),
        "tuned": {m: tuned[m] for m in config.methods},
        "runs": by_run,
        "gamma": {shown(g): r for g, r in gamma_runs.items()},
        "base_gamma_beta_ratio": base_gamma,
        "test": summary,
        "length_logprob": length_logprob,
        "efficiency": cost,
        "order": [m for m in (*TABLE4, *ABLATIONS) if m in config.methods],
        "labels": {m: recipe.methods[m].label for m in config.methods},
        "method_settings": {m: recipe.methods[m].settings | {"source": recipe.methods[m].source} for m in config.methods},
    }
    results["wall_seconds"] = round(time.monotonic() - start, 1)
    write_json(config.output_dir / "results.json", results)
    paths = report.write(results, config)
    say(f"wrote {', '.join(str(p) for p in paths)} in {results['wall_seconds'] / 60:.1f} min")
    return results
