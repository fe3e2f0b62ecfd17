"""AlpacaEval 2 with the pinned alpaca-eval==0.6.2: outputs in its format, judged by its own
`alpaca_eval evaluate` command (a subprocess) against the configured judge.

The 805 instructions and their GPT-4-turbo references are the hub file
`alpaca_eval_gpt4_baseline.json` of the dataset tatsu-lab/alpaca_eval (datasets >= 4 can no longer
load that repository by name). Outputs join the references on the exact instruction text, so they
are written in the references' order with the references' strings.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from simpo_recipes.evaluation.judge import (
    Judge,
    check_reachable,
    harness_env,
    run_logged,
)
from simpo_recipes.files import write_atomic, write_json

HUB_DATASET, REFERENCE_FILE = "tatsu-lab/alpaca_eval", "alpaca_eval_gpt4_baseline.json"
ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
DEFAULT_JUDGE = "gpt-4-1106-preview"
OFFICIAL_SIZE = 805  # the length-controlled fit knows the difficulty of these instructions only


class AlpacaEvalError(RuntimeError):
    """Bad reference file, failed harness run or missing judgements; the message says what to do."""


# how to provide each hub file offline: the references take a flag; alpaca_eval itself reads
# df_gamed.csv from the Hugging Face cache only (hf_hub_download, no flag)
PROVIDE = {REFERENCE_FILE: "Download it where the hub is reachable and pass it with --reference_outputs FILE",
           "df_gamed.csv": (f"alpaca_eval reads it from the Hugging Face cache only: where the hub is reachable run "
                            f"`hf download {HUB_DATASET} df_gamed.csv --repo-type dataset`, then copy that cache's "
                            f"datasets--tatsu-lab--alpaca_eval folder into this machine's HF_HUB_CACHE "
                            f"(default ~/.cache/huggingface/hub)")}


def _hub_file(filename: str) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(HUB_DATASET, filename, repo_type="dataset"))
    except Exception as e:  # offline, no network, hub errors: all end the same way
        raise AlpacaEvalError(f"cannot download {filename} from the hub dataset {HUB_DATASET} "
                              f"({type(e).__name__}: {str(e)[:200]}). {PROVIDE[filename]}") from None


def load_reference(path: str | Path | None = None) -> tuple[Path, list[dict]]:
    """(file, rows): `path`, or the official references downloaded from the hub."""
    path = Path(path) if path else _hub_file(REFERENCE_FILE)
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise AlpacaEvalError(f"reference outputs {path}: not a readable JSON file ({e})") from None
    if not isinstance(rows, list) or not rows:
        raise AlpacaEvalError(f"reference outputs {path}: expected a non-empty JSON array of rows")
    seen: set[str] = set()
    for i, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("instruction"), str) and isinstance(row.get("output"), str)):
            raise AlpacaEvalError(f"reference outputs {path} row {i}: needs string `instruction` and `output`")
        if row["instruction"] in seen:
            raise AlpacaEvalError(f"reference outputs {path} row {i}: instruction repeated (outputs join on it)")
        seen.add(row["instruction"])
    return path, rows


def requests(reference: list[dict], system_prompt: str | None = None) -> list[dict]:
    """One single-turn generation request per reference instruction, after a system turn when
    `system_prompt` is not None (the reference Mistral-Base prompt has an empty one)."""
    system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    return [{"id": str(i), "messages": system + [{"role": "user", "content": r["instruction"]}]}
            for i, r in enumerate(reference)]


def write_outputs(path: str | Path, reference: list[dict], answers: list[dict], generator: str) -> Path:
    """The model_outputs file: {instruction, output, generator, dataset} in the references' order."""
    if len(answers) != len(reference):
        raise AlpacaEvalError(f"{len(answers)} answers for {len(reference)} reference instructions")
    return write_json(path, [{"instruction": r["instruction"], "output": a["output"], "generator": generator,
                              "dataset": r.get("dataset", "")} for r, a in zip(reference, answers)])


def annotator_config(judge_model: str, directory: str | Path) -> Path:
    """The default weighted judge's config with `judge_model`; a model name without "gpt-4" or
    "turbo" would otherwise send it to the legacy completions endpoint."""
    import alpaca_eval

    source = Path(alpaca_eval.__file__).parent / "evaluators_configs" / ANNOTATOR
    config = yaml.safe_load((source / "configs.yaml").read_text())
    entry = config[ANNOTATOR]
    entry["prompt_template"] = str(source.parent / entry["prompt_template"])
    entry["completions_kwargs"] |= {"model_name": judge_model, "requires_chatml": True}
    return write_atomic(Path(directory) / ANNOTATOR / "configs.yaml", yaml.safe_dump(config, sort_keys=False))


def _forget_failed_judgements(cache: Path) -> None:
    """alpaca_eval caches a failed judgement as preference -1 and never retries it: drop those."""
    if cache.exists():
        rows = json.loads(cache.read_text())
        write_json(cache, [r for r in rows if r.get("preference") not in (None, -1)])


def length_controlled_note(n_rows: int) -> str | None:
    """Why the length-controlled win rate cannot be computed, or None when it can."""
    if n_rows != OFFICIAL_SIZE:
        return f"not computed: the length-controlled fit needs AlpacaEval's {OFFICIAL_SIZE} instructions (got {n_rows})"
    try:
        _hub_file("df_gamed.csv")  # the length-controlled fit downloads it too; fail here, clearly
    except AlpacaEvalError as e:
        return f"not computed: {e}"
    return None


def evaluate(model_outputs: str | Path, reference_path: str | Path, judge: Judge, output_dir: str | Path,
             name: str, echo: bool = True) -> dict:
    """Run `alpaca_eval evaluate` (its output to the console with `echo`, always to a log);
    judgements are cached in output_dir, so a rerun resumes.
    Returns the leaderboard row: win_rate, standard_error, length_controlled_winrate (or None
    with lc_note saying why), n_total, avg_length."""
    out = Path(output_dir).resolve()  # alpaca_eval reads a relative config path inside its own package
    check_reachable(judge)
    n_rows = len(json.loads(Path(model_outputs).read_text()))
    lc_note = length_controlled_note(n_rows)
    # a Python literal: alpaca_eval's command line (fire) reads JSON's null as the string 'null',
    # which wrote the fit's weights to ./null/; None keeps them in memory only
    metric = ["--fn_metric", "get_winrate", "--sort_by", "win_rate"] if lc_note else [
        "--fn_metric", "get_length_controlled_winrate", "--metric_kwargs", "{'save_weights_dir': None}"]
    command = [str(Path(sys.executable).with_name("alpaca_eval")), "evaluate", "--model_outputs", str(model_outputs),
               "--reference_outputs", str(reference_path), "--annotators_config",
               str(annotator_config(judge.model, out / "judge_config").parent), "--name", name,
               "--output_path", str(out), "--caching_path", str(out / "annotations_cache.json"),
               "--precomputed_leaderboard", "None", "--is_overwrite_leaderboard", "True", *metric]
    _forget_failed_judgements(out / "annotations_cache.json")
    run_logged("alpaca_eval evaluate", command, out / "alpaca_eval.log", AlpacaEvalError, echo=echo,
               env=harness_env(judge))
    annotations = json.loads((out / "annotations.json").read_text())
    judged = sum(a.get("preference") is not None for a in annotations)
    if judged < n_rows:
        raise AlpacaEvalError(f"{n_rows - judged} of {n_rows} outputs were not judged (judge errors or unmatched "
                              f"instructions); see {out / 'alpaca_eval.log'}. Rerun: judged ones are cached")
    import pandas as pd

    row = pd.read_csv(out / "leaderboard.csv", index_col=0).loc[name]
    return {"win_rate": float(row["win_rate"]), "standard_error": float(row["standard_error"]),
            "length_controlled_winrate": None if lc_note else float(row["length_controlled_winrate"]),
            "lc_note": lc_note, "n_total": int(row["n_total"]), "avg_length": int(row["avg_length"]),
            "annotator": ANNOTATOR} | judge.record()
