"""What a stage's output_dir guarantees across crashes, signals and reruns.

- One run at a time: the stage holds an exclusive lock on `output_dir/.lock` while it runs (the
  operating system releases it when the process ends, even on kill -9); a second run into the
  same folder is refused with a message naming the first.
- It resumes only the run it started: `output_dir/run.json` keeps a fingerprint of what defines
  the run (the resolved config without bookkeeping keys, the global batch, the starting model's
  and tokenizer's files, the local data files, and after tokenization the token ids of every
  split). A rerun whose fingerprint differs stops with the difference and the two ways forward: a
  new output_dir, or `--fresh_start` (the old run is moved aside, nothing is deleted).
- A finished stage whose fingerprint matches is skipped with a message (its model is kept as is).
- Checkpoints count only when complete (trainer state readable, weights, optimizer, scheduler and
  RNG state all there): a rerun resumes from the last complete one and removes the ones a kill cut
  short.

Decisions are made on the main process and shared with the others, so that all processes of a
launch resume, skip or stop together.
"""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from transformers import TrainerCallback, TrainingArguments

from simpo_recipes.config.arguments import ModelArguments
from simpo_recipes.config.parsing import resolved
from simpo_recipes.errors import UserError
from simpo_recipes.files import write_atomic, write_json

logger = logging.getLogger("simpo_recipes")

LOCK, RUN_FILE = ".lock", "run.json"
# Written by the stage itself beside the model: not part of the starting model's identity
RUN_ARTIFACTS = {LOCK, RUN_FILE, "run_config.yaml", "metrics.jsonl", "training_curves.png", "training_args.bin"}
# Config keys that change how a run is logged, saved, evaluated or spread over devices, not what it
# trains: a resume may change them. Every other key (a new objective's included) defines the run.
BOOKKEEPING = {
    "output_dir", "logging_dir", "logging_strategy", "logging_steps", "logging_first_step", "logging_nan_inf_filter",
    "log_level", "log_level_replica", "log_on_each_node", "disable_tqdm", "report_to", "run_name", "project",
    "trackio_space_id", "trackio_static_space_id", "save_strategy", "save_steps", "save_total_limit",
    "save_on_each_node", "save_only_model", "eval_strategy", "eval_steps", "eval_delay", "eval_on_start",
    "per_device_eval_batch_size", "eval_accumulation_steps", "eval_do_concat_batches", "batch_eval_metrics",
    "prediction_loss_only", "include_for_metrics", "dataloader_num_workers", "dataloader_prefetch_factor",
    "dataloader_pin_memory", "dataloader_persistent_workers", "preprocessing_num_workers", "max_bad_fraction",
    "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push",
    "hub_revision", "resume_from_checkpoint", "fresh_start", "use_cpu", "local_rank", "ddp_backend",
    "ddp_timeout", "ddp_find_unused_parameters", "ddp_bucket_cap_mb", "ddp_broadcast_buffers", "deepspeed", "fsdp",
    "fsdp_config", "accelerator_config", "parallelism_config", "gradient_checkpointing",
    "gradient_checkpointing_kwargs", "activation_checkpointing", "activation_checkpointing_kwargs",
    "per_device_train_batch_size", "gradient_accumulation_steps", "auto_find_batch_size", "torch_empty_cache_steps",
    "skip_memory_metrics", "include_num_input_tokens_seen", "torch_compile", "torch_compile_backend",
    "torch_compile_mode", "debug",
}


class RunFolderError(UserError):
    """output_dir cannot be used for this run; the message says why and what to do."""


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def _shared(decide: Callable[[], Any], main: bool) -> Any:
    """`decide()` on the main process; its result (or its exception) on every process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return decide()
    outcome: list[Any] = [None]
    if main:
        try:
            outcome = [("value", decide())]
        except (Exception, SystemExit) as e:  # shared first, raised below
            outcome = [("raise", e)]
    torch.distributed.broadcast_object_list(outcome, src=0)
    kind, value = outcome[0]
    if kind == "value":
        return value
    if main:
        raise value
    raise SystemExit(value.code if isinstance(value, SystemExit) else 2)  # the main process prints why


# ---------------------------------------------------------------------------- fingerprint

def _file_digest(path: Path, whole: bool) -> str:
    """sha256 of a file; of its size, first and last MiB only where `whole` is false (weights:
    a retrained model differs everywhere, and the starting model may be tens of GB)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        if whole or size <= 2 << 20:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(str(size).encode())
            h.update(f.read(1 << 20))
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()[:16]


def _model_files(name: str | None) -> dict[str, str]:
    """Digest of each file of a local model folder (not checkpoints, not this project's run files); a
    hub name is identified by its name and revision, which the config holds."""
    folder = Path(name).expanduser() if name else None
    if folder is None or not folder.is_dir():
        return {}
    return {p.name: _file_digest(p, whole=False) for p in sorted(folder.iterdir())
            if p.is_file() and p.name not in RUN_ARTIFACTS}


def fingerprint(configs: tuple) -> dict:
    """What defines a run before its data is tokenized (`tokenized` adds the token ids later)."""
    from simpo_recipes.data.loading import split_files

    model_args = next(c for c in configs if isinstance(c, ModelArguments))
    args = next(c for c in configs if isinstance(c, TrainingArguments))
    data_args = next(c for c in configs if hasattr(c, "dataset_mixer"))
    config = {k: v for k, v in resolved(configs).items() if k not in BOOKKEEPING}
    config["global batch"] = args.world_size * args.per_device_train_batch_size * args.gradient_accumulation_steps
    data = {}
    for source in data_args.dataset_mixer:
        folder = Path(source).expanduser()
        if folder.is_dir():
            files = {f for split in data_args.dataset_splits for f in split_files(folder, split)}
            data[source] = {str(f.relative_to(folder)): _file_digest(f, whole=True) for f in sorted(files)}
    models = {name: _model_files(name) for name in (model_args.model_name_or_path, model_args.tokenizer_name_or_path)
              if name}
    return json.loads(json.dumps({"config": config, "model files": models, "data files": data}, default=str))


def tokenized_digest(splits: dict) -> dict[str, str]:
    """sha256 of each tokenized split's rows (Arrow IPC of its columns, in order)."""
    digests = {}
    for name, ds in splits.items():
        h = hashlib.sha256()
        for table in ds.with_format("arrow").iter(batch_size=10_000):
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            h.update(sink.getvalue())
        digests[name] = h.hexdigest()[:16]
    return digests


def differences(old: dict, new: dict, limit: int = 12) -> list[str]:
    """One line for every part of two fingerprints that differs."""
    lines = []
    a, b = old.get("config", {}), new.get("config", {})
    for key in sorted(set(a) | set(b)):
        if a.get(key, "∅") != b.get(key, "∅"):
            lines.append(f"  {key}: {json.dumps(a[key]) if key in a else '(not set)'} → "
                         f"{json.dumps(b[key]) if key in b else '(not set)'}")
    for part, label in (("model files", "starting model"), ("data files", "data"), ("tokenized", "tokenized")):
        a, b = old.get(part, {}), new.get(part, {})
        for name in sorted(set(a) | set(b)):
            files_a, files_b = a.get(name, {}), b.get(name, {})
            if not isinstance(files_a, dict) or not isinstance(files_b, dict):  # tokenized: one digest a split
                if files_a != files_b:
                    lines.append(f"  {label} {name} split: changed")
                continue
            for file in sorted(set(files_a) | set(files_b)):
                if files_a.get(file) != files_b.get(file):
                    state = "new" if file not in files_a else "gone" if file not in files_b else "changed"
                    lines.append(f"  {label} {name}: {file} {state}")
    return lines[:limit] + ([f"  … and {len(lines) - limit} more"] if len(lines) > limit else [])


# ---------------------------------------------------------------------------- checkpoints

def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def checkpoints(folder: Path) -> list[Path]:
    """checkpoint-N folders, by step."""
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()]
    return sorted(found, key=_step)


def is_complete(checkpoint: Path, save_only_model: bool = False) -> bool:
    """Whether a kill could not have cut this checkpoint short: the trainer state (written last)
    parses and names this step, and the weights, optimizer, scheduler and RNG files it needs exist
    (DeepSpeed and FSDP keep their weights and optimizer in folders of their own)."""
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        if state.get("global_step") != _step(checkpoint):
            return False
        shards = []
        for index in checkpoint.glob("*.index.json"):
            shards += list(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError):
        return False
    names = {p.name for p in checkpoint.iterdir()}
    sharded = any(n.startswith(("global_step", "pytorch_model_fsdp")) for n in names)  # DeepSpeed, FSDP
    weights = all(s in names for s in shards) if shards else sharded or bool(
        names & {"model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin"})
    if save_only_model or sharded:
        return weights
    return weights and {"optimizer.pt", "scheduler.pt"} <= names and any(n.startswith("rng_state") for n in names)


def last_complete_checkpoint(folder: Path, save_only_model: bool = False) -> Path | None:
    done = [c for c in checkpoints(folder) if is_complete(c, save_only_model)]
    return done[-1] if done else None


def resume_hint(folder: Path) -> str:
    """What rerunning the same command does for this folder."""
    last = last_complete_checkpoint(folder)
    if last is None:
        return "no checkpoint was saved yet: rerunning the same command starts this stage over"
    return f"rerun the same command to resume from {last} (the steps after it are trained again)"


# ---------------------------------------------------------------------------- the folder

_HELD: list[int] = []  # lock file descriptors, open for the life of the process
_CLAIMED: list[Path] = []  # the output_dir this process claimed


def interrupted_hint() -> str:
    """For `run_cli`: what rerunning does after Ctrl-C or SIGTERM stopped this process's stage."""
    return resume_hint(_CLAIMED[-1]) if _CLAIMED else ""


def _lock(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RunFolderError(f"output_dir {folder} cannot be used: {e.strerror}"
                             f"{f' ({e.filename})' if e.filename else ''}; choose a folder you can write") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunFolderError(f"output_dir {folder} is in use by another run ({holder}); wait for it to end or "
                             "stop it, or give this run another output_dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, (f"pid {os.getpid()} on {socket.gethostname()}, since {_now()}: "
                  f"{' '.join(sys.argv)}\n").encode())
    _HELD.append(fd)


def _holds_a_run(folder: Path) -> bool:
    return any(p.name not in {LOCK} for p in folder.iterdir())


def _move_aside(folder: Path) -> Path:
    aside = folder.with_name(f"{folder.name}.previous-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    aside.mkdir()
    for entry in folder.iterdir():
        if entry.name != LOCK:
            shutil.move(str(entry), aside / entry.name)
    return aside


def _final_model_present(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


@dataclass
class RunFolder:
    """The stage's claim on output_dir; made by `claim`."""

    path: Path = field(metadata={"help": "output_dir."})
    main: bool = field(metadata={"help": "Whether this process decides and writes (process 0)."})
    record: dict = field(metadata={"help": "run.json: fingerprint, start, finish."})
    checkpoint: str | None = field(default=None, metadata={"help": "Last complete checkpoint to resume from."})

    def _save(self) -> None:
        if self.main:
            write_json(self.path / RUN_FILE, self.record)

    def check_tokenized(self, splits: dict) -> None:
        """Add the token ids of every split to the fingerprint, or stop if they differ from the
        run's (the config, model and data files matched, so the tokenization or a hub dataset changed)."""

        def decide():
            digests = tokenized_digest(splits)
            known = self.record["fingerprint"].get("tokenized")
            if known is not None and known != digests:
                raise RunFolderError(_mismatch(self.path, differences({"tokenized": known}, {"tokenized": digests}),
                                               "same config, model and data files, but the tokenization code or a "
                                               "hub dataset changed"))
            return digests

        self.record["fingerprint"]["tokenized"] = _shared(decide, self.main)
        self._save()

    def callbacks(self) -> list[TrainerCallback]:
        """What every stage's trainer gets: metrics.jsonl, the divergence check, the trained-out check."""
        from simpo_recipes.training.divergence import DivergenceCallback
        from simpo_recipes.training.reporting import MetricsFileCallback

        return [MetricsFileCallback(str(self.path)), DivergenceCallback(), _StopIfTrainedOut()]

    def train(self, trainer) -> None:
        """trainer.train(), resuming from the last complete checkpoint. One that already reached
        max_steps (a kill after it, before the final save) is loaded and not trained further:
        transformers would train one step past max_steps and log a train_loss of 0."""
        try:
            trainer.train(resume_from_checkpoint=self.checkpoint)
        except _TrainedOut:
            logger.info("no step left to train: %s is at step %d of %d", self.checkpoint, trainer.state.global_step,
                        trainer.state.max_steps)

    def finish(self, trainer) -> None:
        """Mark the stage finished (after its final model is saved): a rerun skips it."""
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        self.record["finished"] = {"time": _now(), "global_step": trainer.state.global_step,
                                   "last_logged_loss": losses[-1] if losses else None}
        self._save()


class _TrainedOut(Exception):
    """Raised before the first step of a resume that has no step left."""


class _StopIfTrainedOut(TrainerCallback):
    # on_train_begin comes after the checkpoint's weights, optimizer and state are loaded
    def on_train_begin(self, args, state, control, **kwargs):
        if 0 < state.max_steps <= state.global_step:
            raise _TrainedOut


def _mismatch(folder: Path, lines: list[str], why: str = "") -> str:
    return "\n".join([f"{folder} holds a different run than this command describes{f' ({why})' if why else ''}"
                       + (":" if lines else "."), *lines,
                      "Resuming would continue that run's checkpoints as if they were this one's. Either train into "
                      "a new folder (--output_dir=NEW; under make train: ARGS=\"--<stage>.output_dir=NEW\"), or "
                      f"start this one over with --fresh_start (the old run is moved to {folder.name}.previous-<time>"
                      " beside it; nothing is deleted)."])


def claim(configs: tuple) -> RunFolder:
    """The first thing a stage does: lock output_dir, check the fingerprint against the run it
    holds, skip the stage if that run finished (SystemExit(0)), write run.json and run_config.yaml,
    and find the checkpoint to resume from."""
    from simpo_recipes.config.parsing import to_yaml

    model_args = next(c for c in configs if isinstance(c, ModelArguments))
    args = next(c for c in configs if isinstance(c, TrainingArguments))
    folder, main = Path(args.output_dir), args.process_index == 0

    def decide() -> tuple[dict, str | None]:
        _lock(folder)
        new = fingerprint(configs)
        if model_args.fresh_start and _holds_a_run(folder):
            logger.warning("--fresh_start: moved the previous run in %s to %s", folder, _move_aside(folder))
        record = None
        if (folder / RUN_FILE).exists():
            try:
                record = json.loads((folder / RUN_FILE).read_text())
                old = record["fingerprint"]
            except (ValueError, KeyError, TypeError):
                raise RunFolderError(_mismatch(folder, [], f"its {RUN_FILE} cannot be read")) from None
            old = {k: v for k, v in old.items() if k != "tokenized"}
            if old != new:
                raise RunFolderError(_mismatch(folder, differences(old, new)))
            finished = record.get("finished")
            if finished and _final_model_present(folder):
                print(f"{folder}: this stage finished on {finished['time']} ({finished['global_step']} steps) with the "
                      "same config, starting model and data: skipping it (--fresh_start trains it again)", flush=True)
                raise SystemExit(0)
        elif checkpoints(folder) or (folder / "config.json").exists():
            raise RunFolderError(_mismatch(folder, [], "it holds checkpoints or a model but no fingerprint "
                                                       f"({RUN_FILE}; written since this version)"))
        if record is None:
            record = {"fingerprint": new, "started": _now(), "finished": None}
        record["finished"] = None
        record.setdefault("resumed", [])
        last = last_complete_checkpoint(folder, args.save_only_model)
        for checkpoint in checkpoints(folder):
            if checkpoint != last and not is_complete(checkpoint, args.save_only_model):
                logger.warning("removing %s: it is incomplete (the run was stopped while saving it)", checkpoint)
                shutil.rmtree(checkpoint)
        if last is not None:
            record["resumed"].append({"time": _now(), "from": last.name})
            logger.info("resuming from %s", last)
        write_json(folder / RUN_FILE, record)
        write_atomic(folder / "run_config.yaml", to_yaml(configs))
        return record, None if last is None else str(last)

    record, checkpoint = _shared(decide, main)
    _CLAIMED.append(folder)
    return RunFolder(folder, main, record, checkpoint)
