"""MT-Bench with the pinned fschat==0.2.36: answers in its format, its own `gen_judgment`
(single-answer grading) and `show_result`, against the configured judge.

fschat needs openai<1 and imports torch even to judge, so it runs in its own virtualenv under the
cache folder; that venv reuses this environment's torch/transformers/pandas through a .pth file
(appended to its path, after its own openai) instead of downloading a second torch. fschat's wheel
ships no data: the 80 questions, the judge prompts and GPT-4's reference answers are fetched from
FastChat's v0.2.36 tag on first use. Work layout (fschat reads paths relative to its working
directory): <dir>/judge_prompts.jsonl and <dir>/data/mt_bench/{question.jsonl, model_answer/,
reference_answer/<judge>.jsonl, model_judgment/<judge>_single.jsonl}.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

from simpo_recipes.evaluation.judge import (
    Judge,
    check_reachable,
    harness_env,
    run_logged,
)
from simpo_recipes.files import read_jsonl, write_atomic, write_jsonl

FSCHAT_PINS = ("fschat==0.2.36", "openai==0.28.1", "anthropic==2.14.0")
DATA_URL = "https://raw.githubusercontent.com/lm-sys/FastChat/v0.2.36/fastchat/llm_judge/data/"
DATA_FILES = {"question.jsonl": "mt_bench/question.jsonl", "judge_prompts.jsonl": "judge_prompts.jsonl",
              "reference_answer/gpt-4.jsonl": "mt_bench/reference_answer/gpt-4.jsonl"}
DEFAULT_JUDGE = "gpt-4"
# fschat's gen_model_answer: sampling temperature per category, 1024 new tokens
CATEGORY_TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                        "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
MAX_NEW_TOKENS = 1024


class MTBenchError(RuntimeError):
    """Missing data, a failed fschat run or failed judgements; the message says what to do."""


def fschat_python(cache_dir: str | Path) -> Path:
    """The interpreter of fschat's venv, built on first use (~30 s from PyPI)."""
    venv = Path(cache_dir) / "fschat-0.2.36"
    python, marker = venv / "bin" / "python", venv / ".installed"
    shared = sysconfig.get_paths()["purelib"]  # this environment's site-packages (torch, pandas)
    if marker.exists() and marker.read_text() == shared:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    print(f"building fschat's virtualenv in {venv} ({', '.join(FSCHAT_PINS)})", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *FSCHAT_PINS], check=True)
    except subprocess.CalledProcessError as e:
        raise MTBenchError(f"could not build fschat's virtualenv in {venv} ({e}); it needs PyPI") from None
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "zz_shared_site_packages.pth").write_text(shared + "\n")
    marker.write_text(shared)
    return python


def fetch_data(directory: str | Path) -> Path:
    """`directory` holding question.jsonl, judge_prompts.jsonl and reference_answer/gpt-4.jsonl,
    downloading the missing ones from FastChat v0.2.36."""
    directory = Path(directory)
    for name, remote in DATA_FILES.items():
        if not (directory / name).exists():
            try:
                with urllib.request.urlopen(DATA_URL + remote, timeout=60) as response:
                    write_atomic(directory / name, response.read().decode())
            except OSError as e:
                raise MTBenchError(f"cannot download MT-Bench's {name} from {DATA_URL + remote} ({e}). Put "
                                   f"{', '.join(DATA_FILES)} (FastChat v0.2.36, fastchat/llm_judge/data) in {directory} "
                                   "or pass --mt_bench_data DIR") from None
    return directory


def load_questions(data_dir: str | Path) -> list[dict]:
    path = Path(data_dir) / "question.jsonl"
    questions = read_jsonl(path)
    for q in questions:
        turns = q.get("turns")
        if q.get("category") not in CATEGORY_TEMPERATURE or not (isinstance(turns, list) and len(turns) == 2):
            raise MTBenchError(f"{path} question {q.get('question_id')}: needs a category among "
                               f"{sorted(CATEGORY_TEMPERATURE)} and two turns")
    return questions


def requests(questions: list[dict], first_answers: list[dict] | None = None) -> list[dict]:
    """Turn-1 requests, or with the turn-1 answers, turn-2 requests with turn 1 in context."""
    out = []
    for k, q in enumerate(questions):
        messages = [{"role": "user", "content": q["turns"][0]}]
        if first_answers is not None:
            messages += [{"role": "assistant", "content": first_answers[k]["output"]},
                         {"role": "user", "content": q["turns"][1]}]
        out.append({"id": f"{q['question_id']}-{1 if first_answers is None else 2}", "messages": messages,
                    "temperature": CATEGORY_TEMPERATURE[q["category"]]})
    return out


def write_answers(work_dir: str | Path, questions: list[dict], first: list[dict], second: list[dict],
                  model_id: str) -> Path:
    """data/mt_bench/model_answer/<model_id>.jsonl in fschat's format."""
    rows = [{"question_id": q["question_id"], "answer_id": f"{model_id}-{q['question_id']}", "model_id": model_id,
             "choices": [{"index": 0, "turns": [a["output"], b["output"]]}], "tstamp": time.time()}
            for q, a, b in zip(questions, first, second)]
    return write_jsonl(Path(work_dir) / "data" / "mt_bench" / "model_answer" / f"{model_id}.jsonl", rows)


def _merge_judgments(bench: Path, todo: Path, name: str) -> list[dict]:
    """Valid judgements (score != -1) of the main file plus those of an interrupted or finished
    subset run, one per (question, model, turn); the subset's file is then removed."""
    main, extra = bench / "model_judgment" / name, todo / "model_judgment" / name
    rows = (read_jsonl(main) if main.exists() else []) + (read_jsonl(extra) if extra.exists() else [])
    kept: dict[tuple, dict] = {}
    for r in rows:
        if r["score"] != -1:
            kept.setdefault((r["question_id"], r["model"], r["turn"]), r)
    write_jsonl(main, list(kept.values()))
    extra.unlink(missing_ok=True)
    return list(kept.values())


def reference_answers(data_dir: Path, judge_model: str) -> Path:
    """The math/reasoning/coding reference answers: the judge's own (reference_answer/<judge>.jsonl;
    the paper's GPT-4-Turbo column used the authors' gpt-4-1106-preview.jsonl) when present, else
    gpt-4's, with a notice."""
    own, fallback = data_dir / "reference_answer" / f"{judge_model}.jsonl", data_dir / "reference_answer" / "gpt-4.jsonl"
    if own.exists():
        return own
    if judge_model != "gpt-4":
        print(f"notice: no {own}: the {judge_model} judge gets gpt-4's reference answers ({fallback}); put the "
              f"judge's own there to grade as the paper did", file=sys.stderr)
    return fallback


def judge(work_dir: str | Path, data_dir: str | Path, model_id: str, judge: Judge, python: Path,
          parallel: int = 4) -> dict:
    """fschat's gen_judgment on the questions not yet judged for `model_id`, then show_result.
    Returns {"score", "turn_1", "turn_2", "judge", "judge_host", "reference_answers"}."""
    work, data_dir = Path(work_dir), Path(data_dir)
    bench, todo = work / "data" / "mt_bench", work / "data" / "mt_bench_todo"
    questions = load_questions(data_dir)
    if not (bench / "model_answer" / f"{model_id}.jsonl").exists():
        raise MTBenchError(f"no answers of {model_id} in {bench / 'model_answer'}: write them first (write_answers)")
    shutil.copyfile(data_dir / "judge_prompts.jsonl", work / "judge_prompts.jsonl")
    shutil.copyfile(data_dir / "question.jsonl", bench / "question.jsonl")
    references = reference_answers(data_dir, judge.model)
    for folder in (bench, todo):  # fschat looks the reference answers up by the judge's name
        write_atomic(folder / "reference_answer" / f"{judge.model}.jsonl", references.read_text())
    name = f"{judge.model}_single.jsonl"
    done = {(r["question_id"], r["turn"]) for r in _merge_judgments(bench, todo, name) if r["model"] == model_id}
    missing = [q for q in questions if not {(q["question_id"], 1), (q["question_id"], 2)} <= done]
    if missing:
        check_reachable(judge)
        write_jsonl(todo / "question.jsonl", missing)
        shutil.copytree(bench / "model_answer", todo / "model_answer", dirs_exist_ok=True)
        command = [str(python), "-m", "fastchat.llm_judge.gen_judgment", "--bench-name", "mt_bench_todo",
                   "--judge-file", "judge_prompts.jsonl", "--judge-model", judge.model, "--model-list", model_id,
                   "--parallel", str(parallel)]
        try:
            run_logged("fschat gen_judgment", command, work / "gen_judgment.log", MTBenchError, cwd=work,
                       env=harness_env(judge), stdin=subprocess.PIPE)
        finally:
            done = {(r["question_id"], r["turn"]) for r in _merge_judgments(bench, todo, name) if r["model"] == model_id}
        failed = 2 * len(questions) - len(done)
        if failed:
            raise MTBenchError(f"{failed} of {2 * len(questions)} MT-Bench judgements failed (judge errors or no "
                               f"[[rating]]); see {work / 'gen_judgment.log'}. Rerun: the others are kept")
    command = [str(python), "-m", "fastchat.llm_judge.show_result", "--bench-name", "mt_bench",
               "--judge-model", judge.model, "--model-list", model_id]
    run_logged("fschat show_result", command, work / "show_result.log", MTBenchError, cwd=work)
    return (parse_show_result((work / "show_result.log").read_text(), model_id) | judge.record()
            | {"reference_answers": references.stem})


def parse_show_result(text: str, model_id: str) -> dict:
    """The model's first-turn, second-turn and average scores as show_result prints them."""
    scores = {}
    for key, title in (("turn_1", "First turn"), ("turn_2", "Second turn"), ("score", "Average")):
        section = text.split(f"########## {title} ##########", 1)[-1]
        match = re.search(rf"^{re.escape(model_id)}\s.*?(-?\d+(?:\.\d+)?)\s*$", section, re.M)
        if match is None:
            raise MTBenchError(f"show_result printed no {title.lower()} score for {model_id}")
        scores[key] = float(match.group(1))
    return scores
