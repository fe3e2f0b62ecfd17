#!/usr/bin/env python
"""`make sweep MODEL=<name>`: tune the preference stage of recipes/<name>.yaml over a grid, one
training run per point (each in its own folder under outputs/sweeps/<name>/), locally one after
another or as Slurm array jobs, then one table (sweep.md) and one plot (sweep.png) of the metrics.

    python scripts/sweep.py recipes/<name>.yaml [--grid KEY=V1,V2,...]... [--search sequential|grid]
        [--metric NAME[:min|max]]... [--sweep_dir DIR] [--slurm] [--key=value ...]

The grid comes from --grid (in the order given), else the recipe's `sweep:` block, else the paper's
grids in the authors' order: learning_rate, then gamma_beta_ratio, then beta. Sequential search tunes
one key after another, keeping each one's best value; grid search runs every combination. Metrics are
the final logged values (default: held-out reward accuracy, which chooses, and held-out loss), or
`<benchmark>/<key>` of an evaluation run on each point's model (e.g. alpaca_eval/win_rate, with
--eval_args for scripts/evaluate.py); a metric added later is measured without retraining.
A rerun skips finished points and resumes an interrupted one; stages before the tuned one run once.
--key=value overrides hold for every point (e.g. --max_steps=100), as in `make train`."""
import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from simpo_recipes.cli import run_cli
from simpo_recipes.config.arguments import ConfigError
from simpo_recipes.pipeline.launch import prepare_stage, recipe_topology
from simpo_recipes.pipeline.recipes import load_recipe, stage_commands
from simpo_recipes.pipeline.sweep import (
    Metric,
    Point,
    SweepSpec,
    benchmarks,
    check_definition,
    chosen_values,
    missing_metrics,
    read_records,
    record_point,
    report,
    slurm_script,
)


def parse_grid(entries: list[str]) -> dict[str, list]:
    grid = {}
    for entry in entries:
        key, eq, values = entry.partition("=")
        if not eq or not key or not values:
            raise ConfigError(f"--grid {entry!r}: write KEY=V1,V2,... (e.g. --grid learning_rate=3e-7,5e-7)")
        grid[key] = values.split(",")
    return grid


def base_value(configs: tuple, key: str):
    """The recipe's own value of a grid key, from the stage's configs or its objective's hyperparameters
    (the margin as a ratio even when the recipe gives an absolute γ)."""
    owner = next((c for c in configs if hasattr(c, key)), None)
    if owner is None:
        raise ConfigError(f"grid key {key!r}: not a key of the tuned stage's config or of objective "
                          f"{configs[-1].name!r}")
    value = getattr(owner, key)
    if key == "gamma_beta_ratio" and value is None:
        return owner.effective_gamma / owner.beta
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipes/<name>.yaml")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="A key and its values; repeat for more keys (tuned in this order).")
    parser.add_argument("--search", choices=("sequential", "grid"), default=None)
    parser.add_argument("--metric", action="append", default=[], metavar="NAME[:min|max]",
                        help="Final logged value to compare (repeatable; the first chooses).")
    parser.add_argument("--eval_args", default="", metavar="'ARGS'",
                        help="For <benchmark>/<key> metrics: scripts/evaluate.py's arguments, e.g. '--judge local'.")
    parser.add_argument("--sweep_dir", default=None, help="Default: outputs/sweeps/<recipe name>.")
    parser.add_argument("--slurm", action="store_true", help="Submit the points as Slurm array jobs (sbatch).")
    parser.add_argument("--task", default=None, help=argparse.SUPPRESS)  # one Slurm array job: KEY:INDEX
    parser.add_argument("--report", action="store_true", help="Only write the table and plot of finished points.")
    parser.add_argument("--accelerate_config", default=None, help="Overrides the recipe's (ACCELERATE_CONFIG=).")
    parser.add_argument("--num_processes", type=int, default=None, help="Processes per point (NUM_GPUS=).")
    parser.add_argument("--from_sft", default=None, metavar="published|MODEL",
                        help="Skip the SFT stage; tune from the paper's SFT checkpoint or from MODEL.")
    parser.add_argument("--objective", default=None, metavar="METHOD",
                        help="Tune one of the recipe's methods (OBJECTIVE=) instead of its preference stage as is; "
                             "give its grid with --grid.")
    args, overrides = parser.parse_known_args()

    recipe = load_recipe(args.recipe)
    sweep = recipe.sweep
    spec_grid = parse_grid(args.grid) if args.grid else sweep.grid
    search = args.search or sweep.search
    metrics = [Metric.parse(m) for m in (args.metric or sweep.metrics)]
    stages = stage_commands(recipe, overrides, args.from_sft, args.objective)
    tuned = max((i for i, (stage, _) in enumerate(stages) if stage.stage != "sft"), default=None)
    if tuned is None:
        raise ConfigError(f"recipe {recipe.name} has no preference stage to tune")
    stage, (script, *stage_args) = stages[tuned]
    name = recipe.name + (f"-{args.objective}" if args.objective else "")
    sweep_dir = Path(args.sweep_dir or Path("outputs") / "sweeps" / name)  # beside the stages' outputs
    tag = f"[sweep {recipe.name}]"

    # every point's config is checked before anything runs (on a login node: as a one-process CPU run)
    topology, _ = recipe_topology(recipe, args.accelerate_config, args.num_processes, plan=args.slurm)
    base_configs = prepare_stage(stage, script, stage_args, topology, plan=args.slurm)[0]
    spec = SweepSpec(spec_grid, search, metrics, {k: base_value(base_configs, k) for k in spec_grid})
    for key, values in spec.grid.items():
        for value in values:
            prepare_stage(stage, script, stage_args + Point({key: value}).overrides(), topology, plan=True)
    check_definition(sweep_dir, {"recipe": str(Path(args.recipe).resolve()), "stage_config": stage.config,
                                 "fixed": overrides, "from_sft": args.from_sft, "objective": args.objective,
                                 "grid": spec.grid,
                                 "search": search, "metrics": [m.name for m in metrics]})
    title = f"Sweep of recipes/{recipe.name}.yaml, stage {stage.stage}"

    def evaluate(point: Point, out: Path) -> None:
        """The benchmarks the metrics name, on the point's model (scripts/evaluate.py, --eval_args)."""
        if wanted := benchmarks(metrics):
            command = [sys.executable, str(Path(__file__).with_name("evaluate.py")), args.recipe, "--model_path",
                       str(out), "--name", f"{recipe.name}-{point.name}", "--output_dir", str(out / "eval"),
                       "--benchmarks", *wanted, *shlex.split(args.eval_args)]
            print(f"{tag} {point.name}: evaluating {', '.join(wanted)}", flush=True)
            if subprocess.run(command).returncode != 0:
                sys.exit(f"{tag} point {point.name}: evaluation failed (see above); the same command resumes it")

    def run_point(point: Point) -> None:
        out = sweep_dir / point.name
        if (out / "sweep_point.json").exists():
            record = json.loads((out / "sweep_point.json").read_text())
            if not missing_metrics(record, metrics):
                print(f"{tag} {point.name}: finished, skipped", flush=True)
                return
            evaluate(point, out)  # a metric added since the point ran: measured, not retrained
            record_point(point, out, metrics, record["seconds"])
            print(f"{tag} {point.name}: finished, metrics added", flush=True)
            return
        _, command = prepare_stage(stage, script, stage_args + point.overrides() + [f"--output_dir={out}"], topology)
        print(f"{tag} {point.name}: {' '.join(point.overrides())} -> {out}", flush=True)
        start = time.monotonic()
        if subprocess.run(command).returncode != 0:
            sys.exit(f"{tag} point {point.name} failed (see above); the same command resumes it")
        evaluate(point, out)
        record = record_point(point, out, metrics, time.monotonic() - start)
        print(f"{tag} {point.name}: " + ", ".join(f"{k} {v:.4g}" if v is not None else f"{k} not logged"
                                                  for k, v in record["metrics"].items()), flush=True)

    def prepare() -> None:
        """The stages before the tuned one, once: run those whose model is not there yet."""
        for earlier, (earlier_script, *earlier_args) in stages[:tuned]:
            configs, command = prepare_stage(earlier, earlier_script, earlier_args, topology)
            if (Path(configs[2].output_dir) / "config.json").exists():
                print(f"{tag} {earlier.stage} stage: reusing the model in {configs[2].output_dir}", flush=True)
            elif subprocess.run(command).returncode != 0:
                sys.exit(f"{tag} {earlier.stage} stage failed (see above)")

    def points_of(task: str) -> list[Point]:
        if task == "grid":
            return spec.grid_points()
        return spec.axis_points(task, chosen_values(spec, read_records(sweep_dir), upto=task))

    if args.report:
        print(report(spec, sweep_dir, title))
    elif args.task is not None:  # one Slurm array job
        task, _, index = args.task.rpartition(":")
        if task == "prepare":
            prepare()
        else:
            run_point(points_of(task)[int(index)])
    elif args.slurm:
        submit(spec, sweep_dir, stages[:tuned], recipe, topology.num_processes, tag)
    else:
        prepare()
        for task in (["grid"] if search == "grid" else list(spec.grid)):
            for point in points_of(task):
                run_point(point)
        print(report(spec, sweep_dir, title), flush=True)
        print(f"{tag} table {sweep_dir / 'sweep.md'}, plot {sweep_dir / 'sweep.png'}")


def submit(spec: SweepSpec, sweep_dir: Path, earlier: list, recipe, gpus: int, tag: str) -> None:
    """One array job per tuned key (sequential: each after the previous one succeeded) or one for the
    whole grid, a job for the earlier stages first when there are any, and the report at the end."""
    command = [sys.executable, str(Path(sys.argv[0]).resolve()), *(a for a in sys.argv[1:] if a != "--slurm")]
    log_dir = sweep_dir / "slurm"
    log_dir.mkdir(parents=True, exist_ok=True)
    jobs = ([("prepare", 1)] if earlier else []) + (
        [("grid", len(spec.grid_points()))] if spec.search == "grid" else [(k, len(v)) for k, v in spec.grid.items()])
    previous = None
    for task, count in jobs:
        script = log_dir / f"{task}.sbatch"
        script.write_text(slurm_script(f"sweep-{recipe.name}-{task}", gpus, Path.cwd(), log_dir, command, task, count))
        previous = sbatch(script, previous, "afterok")
        print(f"{tag} submitted {task} ({count} job(s)): {previous}", flush=True)
    script = log_dir / "report.sbatch"
    script.write_text(slurm_script(f"sweep-{recipe.name}-report", 0, Path.cwd(), log_dir, [*command, "--report"], None))
    print(f"{tag} submitted the report: {sbatch(script, previous, 'afterany')}; results in {sweep_dir}", flush=True)


def sbatch(script: Path, after: str | None, condition: str) -> str:
    dependency = [f"--dependency={condition}:{after}"] if after else []
    result = subprocess.run(["sbatch", "--parsable", *dependency, str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"sbatch {script} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout.strip().split(";")[0]


if __name__ == "__main__":
    run_cli(main)
