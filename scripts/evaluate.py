#!/usr/bin/env python
"""`make eval MODEL=<name>`: answer each benchmark's prompts with the model a recipe trained, write
the answers in the harness's own format, and run the pinned harness against the judge named by the
environment (JUDGE_BASE_URL, JUDGE_API_KEY, JUDGE_MODEL; defaults: the paper's judges on OpenAI).

    python scripts/evaluate.py recipes/<name>.yaml [--model_path DIR] [--benchmarks alpaca_eval arena_hard mt_bench]
        [--decoding reference|as_configured] [--judge local]

Decoding: AlpacaEval 2 uses the recipe's `generation:` block in the chosen mode: `reference` (the
default) decodes as the paper's numbers were produced (beam search where alpaca-eval 0.6.2 turned
the reference config's do_sample into it), `as_configured` samples as the block reads; Arena-Hard
temperature 0 and 4096 new tokens; MT-Bench fschat's per-category temperatures and 1024 new tokens,
turn 2 answered with turn 1 in context (both with the recipe's stop strings, the same in either
mode). `--judge local`: no network: the demo task's program judges, served on 127.0.0.1, AlpacaEval
2 only, against the correct answers of the demo's held-out prompts. Results go to
outputs/eval/<name>/results.json (one folder per benchmark beside it, the decoding mode and the
judge next to every result); `make table` sets them beside the paper's. A rerun resumes: answers and
judgements already made are kept.
"""
import argparse
import contextlib
import os
import secrets
import sys
from dataclasses import asdict, replace
from pathlib import Path

from simpo_recipes.config.arguments import ConfigError
from simpo_recipes.evaluation import alpacaeval, arena_hard, mt_bench, results
from simpo_recipes.evaluation.generation import BACKENDS, DECODING_MODES, describe, from_recipe, generate
from simpo_recipes.evaluation.judge import Judge, JudgeError, judge_from_env
from simpo_recipes.files import write_json
from simpo_recipes.pipeline.recipes import load_recipe, stage_output_dir

BENCHMARKS = ("alpaca_eval", "arena_hard", "mt_bench")
ERRORS = (ConfigError, JudgeError, alpacaeval.AlpacaEvalError, arena_hard.ArenaHardError, mt_bench.MTBenchError)


def run_alpaca_eval(args, settings, out: Path, judge: Judge) -> dict:
    reference_path, reference = alpacaeval.load_reference(args.reference_outputs)
    requests = alpacaeval.requests(reference, args.recipe.generation.system_prompt)
    answers = generate(out / "generations.jsonl", args.model_path, requests, settings, desc="AlpacaEval 2 answers")
    outputs = alpacaeval.write_outputs(out / "model_outputs.json", reference, answers, args.name)
    return alpacaeval.evaluate(outputs, reference_path, judge, out, args.name)


def run_arena_hard(args, settings, out: Path, judge: Judge) -> dict:
    repo = Path(args.arena_hard_dir).resolve() if args.arena_hard_dir else arena_hard.checkout(args.cache_dir)
    questions = arena_hard.load_questions(repo)
    answers = generate(out / "generations.jsonl", args.model_path, arena_hard.requests(questions), settings,
                       desc="Arena-Hard answers")
    arena_hard.write_answers(out / "data" / arena_hard.BENCH / "model_answer" / f"{args.name}.jsonl",
                             questions, answers, args.name)
    return arena_hard.judge(out, repo, args.name, judge, arena_hard.harness_python(repo))


def run_mt_bench(args, settings, out: Path, judge: Judge) -> dict:
    data = mt_bench.fetch_data(args.mt_bench_data or Path(args.cache_dir) / "mt_bench_data")
    questions = mt_bench.load_questions(data)
    first = generate(out / "generations.jsonl", args.model_path, mt_bench.requests(questions), settings,
                     desc="MT-Bench turn 1")
    second = generate(out / "generations.jsonl", args.model_path, mt_bench.requests(questions, first), settings,
                      desc="MT-Bench turn 2")
    mt_bench.write_answers(out, questions, first, second, args.name)
    return mt_bench.judge(out, data, args.name, judge, mt_bench.fschat_python(args.cache_dir))


RUNNERS = {"alpaca_eval": (run_alpaca_eval, alpacaeval.DEFAULT_JUDGE), "arena_hard": (run_arena_hard, arena_hard.DEFAULT_JUDGE),
           "mt_bench": (run_mt_bench, mt_bench.DEFAULT_JUDGE)}


def benchmark_settings(recipe, args) -> dict:
    """Decoding per benchmark: the recipe's in the chosen mode (it changes AlpacaEval's only: the
    other harnesses fix their own decoding), with each harness's overrides (and the cap)."""
    base = from_recipe(recipe.generation, args.decoding, batch_size=args.batch_size, backend=args.backend)
    plain = replace(base, beam_search=False)
    per = {"alpaca_eval": base,
           "arena_hard": replace(plain, temperature=arena_hard.TEMPERATURE, max_new_tokens=arena_hard.MAX_NEW_TOKENS),
           "mt_bench": replace(plain, max_new_tokens=mt_bench.MAX_NEW_TOKENS)}  # temperatures: per question
    if args.max_new_tokens:
        per = {k: replace(s, max_new_tokens=min(s.max_new_tokens, args.max_new_tokens)) for k, s in per.items()}
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipes/<name>.yaml")
    parser.add_argument("--model_path", default=None, help="Default: the output_dir of the recipe's last stage.")
    parser.add_argument("--name", default=None, help="Model name in the harnesses and the table (default: recipe name).")
    parser.add_argument("--benchmarks", nargs="+", choices=BENCHMARKS, default=None,
                        help="Default: all three (alpaca_eval only with --judge local).")
    parser.add_argument("--output_dir", default=None, help="Default: outputs/eval/<name>.")
    parser.add_argument("--reference_outputs", default=None,
                        help=f"AlpacaEval references (default: {alpacaeval.REFERENCE_FILE} from the hub)")
    parser.add_argument("--mt_bench_data", default=None, help="Folder with MT-Bench's questions, judge prompts, "
                        "reference_answer/gpt-4.jsonl (default: downloaded into the cache)")
    parser.add_argument("--arena_hard_dir", default=None, help="arena-hard-auto checkout (default: cloned into the cache)")
    parser.add_argument("--cache_dir", default=None, help="Harness venvs and data (default: $SIMPO_CACHE_DIR or .cache)")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="Cap every benchmark's answers (quick checks).")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--decoding", choices=DECODING_MODES, default="reference",
                        help="AlpacaEval decoding: as the paper's numbers were produced, or as the recipe's block reads.")
    parser.add_argument("--judge", choices=("env", "local"), default="env",
                        help="env: JUDGE_BASE_URL/JUDGE_API_KEY/JUDGE_MODEL; local: the demo's program on 127.0.0.1, "
                             "AlpacaEval 2 on the demo's held-out prompts (offline)")
    parser.add_argument("--heldout", default="data/demo/heldout.jsonl",
                        help="--judge local: the demo's held-out prompts (`make demo-data`)")
    args = parser.parse_args()
    args.benchmarks = args.benchmarks or (["alpaca_eval"] if args.judge == "local" else list(BENCHMARKS))

    try:
        recipe = load_recipe(args.recipe)
        args.model_path = Path(args.model_path or recipe.root / stage_output_dir(recipe.stages[-1]))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if not (args.model_path / "config.json").exists():
        sys.exit(f"error: no model in {args.model_path}: run `make train MODEL={recipe.name}` or pass --model_path")
    args.name = args.name or recipe.name
    args.cache_dir = Path(args.cache_dir or os.environ.get("SIMPO_CACHE_DIR") or recipe.root / ".cache").resolve()
    out = Path(args.output_dir or recipe.root / "outputs" / "eval" / args.name)
    args.recipe = recipe
    settings = benchmark_settings(recipe, args)
    failed = []
    with contextlib.ExitStack() as stack:
        judges = local_judges(args, stack, out) if args.judge == "local" else {}
        for benchmark in args.benchmarks:
            runner, default_judge = RUNNERS[benchmark]
            decoding = "per question category" if benchmark == "mt_bench" else describe(settings[benchmark])
            print(f"[{args.name}] {benchmark}: model {args.model_path}, decoding mode {args.decoding} ({decoding}), "
                  f"settings {settings[benchmark]}", flush=True)
            try:
                judge = judges.get(benchmark) or judge_from_env(default_judge)
                entry = runner(args, settings[benchmark], out / benchmark, judge)
            except ERRORS as e:
                print(f"[{args.name}] {benchmark} failed: {e}", file=sys.stderr)
                failed.append(benchmark)
                continue
            entry |= {"decoding_mode": args.decoding, "decoding": decoding, "generation": asdict(settings[benchmark])}
            results.update(out / "results.json", benchmark, entry, name=args.name, recipe=recipe.name,
                           model_path=str(args.model_path))
            print(f"[{args.name}] {benchmark}: " + ", ".join(f"{k} {v}" for k, v in entry.items() if k != "generation"))
    if len(failed) < len(args.benchmarks):
        print(f"results: {out / 'results.json'}; `make table` sets them beside the paper's")
    if failed:
        sys.exit(f"error: {', '.join(failed)} failed (see above); rerun to resume")


def local_judges(args, stack: contextlib.ExitStack, out: Path) -> dict[str, Judge]:
    """--judge local: the demo's program judge on 127.0.0.1 for AlpacaEval 2, whose references are
    the correct answers of the demo's held-out prompts (a right answer ties, a wrong one loses)."""
    from simpo_demo.evaluate import gold_references, program_preference
    from simpo_recipes.evaluation.local_judge import ProgramJudge

    if set(args.benchmarks) != {"alpaca_eval"}:
        sys.exit("error: --judge local judges AlpacaEval 2 only (the program knows the demo's prompts, not "
                 "Arena-Hard's or MT-Bench's): drop --benchmarks or pass --benchmarks alpaca_eval")
    if args.reference_outputs is None:
        if not Path(args.heldout).exists():
            sys.exit(f"error: no {args.heldout}: run `make demo-data` (or pass --heldout / --reference_outputs)")
        args.reference_outputs = write_json(out / "alpaca_eval" / "reference_gold.json", gold_references(args.heldout))
    key = secrets.token_hex(16)  # lives in memory and in the harness's environment only
    server = stack.enter_context(ProgramJudge(program_preference, api_key=key))
    return {"alpaca_eval": Judge(model="demo-program-judge", base_url=server.base_url, api_key=key)}


if __name__ == "__main__":
    main()
