"""The reference model for the objectives that need π_ref (DPO, IPO, KTO, R-DPO, LN-DPO).

By default no second model sits in memory during training: before the first step, one pass of the
starting model (LoRA: with its adapters disabled) computes Σ log π_ref(y|x) of every chosen and
rejected response — and of KTO's mismatched sequences — with the same scorer as the policy step
(chunked head, packing) under the same launch. The sums are saved in chunks under
`output_dir/reference_logps/<split>-<fingerprint>/`, so a killed pass resumes at its last whole
chunk and a rerun with the same model, data and tokenization reuses them; the training step reads
them from the batch. `reference_logps: live` instead scores every batch with a frozen copy.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from simpo_recipes.data.preprocess import KL_COLUMNS
from simpo_recipes.files import write_json
from simpo_recipes.training.collator import REFERENCE_COLUMNS

logger = logging.getLogger("simpo_recipes")
TOKEN_COLUMNS = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids", *KL_COLUMNS)


def model_identity(model) -> dict:
    """What names the starting model's weights: where they were loaded from, the hub commit if any,
    the size and modification time of each weight file of a local folder, and the dtype."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    source = Path(config._name_or_path)
    files = {}
    if source.is_dir():
        for path in sorted(source.iterdir()):
            if path.suffix in (".safetensors", ".bin", ".json") and path.is_file():
                stat = path.stat()
                files[path.name] = [stat.st_size, stat.st_mtime_ns]
    return {"model": str(config._name_or_path), "commit": getattr(config, "_commit_hash", None), "files": files,
            "dtype": str(next(base.parameters()).dtype)}


def token_hash(dataset: Dataset) -> str:
    """sha256 of the token ids of every row (prompt, responses and KL responses), in order."""
    digest = hashlib.sha256()
    for column in TOKEN_COLUMNS:
        if column in dataset.column_names:
            array = dataset.data.column(column).combine_chunks()
            digest.update(column.encode())
            digest.update(array.offsets.to_numpy().tobytes())
            digest.update(array.values.to_numpy().tobytes())
    return digest.hexdigest()


def _chunk_path(folder: Path, start: int) -> Path:
    return folder / f"rows-{start:09d}.safetensors"


@contextlib.contextmanager
def reference_weights(model):
    """The starting model's behaviour: a LoRA model with its adapters disabled; any other model as is."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield
    else:
        yield


def score_rows(scorer, model, batch: dict) -> torch.Tensor:
    """[B, C] reference log-prob sums of a batch: chosen, rejected (and KL chosen, KL rejected)."""
    sums, _ = scorer(model, batch)
    columns = list(sums.chunk(2))
    if "kl" in batch:
        columns += list(scorer(model, batch["kl"])[0].chunk(2))
    return torch.stack(columns, dim=1).float()


def add_reference_columns(trainer, dataset: Dataset, split: str) -> Dataset:
    """`dataset` with the REFERENCE_COLUMNS it needs, computed by the cached pass (or read from it)."""
    args, accelerator = trainer.args, trainer.accelerator
    unwrapped = accelerator.unwrap_model(trainer.model)
    fingerprint = hashlib.sha256(json.dumps(
        {"model": model_identity(unwrapped), "tokens": token_hash(dataset)}, sort_keys=True).encode()).hexdigest()
    folder = Path(args.output_dir) / "reference_logps" / f"{split}-{fingerprint[:16]}"
    names = list(REFERENCE_COLUMNS[:4 if KL_COLUMNS[0] in dataset.column_names else 2])
    starts = range(0, len(dataset), args.reference_chunk_rows)
    missing = [s for s in starts if not _chunk_path(folder, s).exists()]
    if missing:
        _compute_chunks(trainer, dataset, folder, missing, names)
        if accelerator.is_main_process:
            write_json(folder / "manifest.json", {"split": split, "rows": len(dataset), "columns": names,
                                                  "model": model_identity(unwrapped), "token_sha256": token_hash(dataset)})
    else:
        logger.info("reference log-probs (%s): reusing %s", split, folder)
    accelerator.wait_for_everyone()
    values = torch.cat([load_file(_chunk_path(folder, s))["logps"] for s in starts])
    for i, name in enumerate(names):
        dataset = dataset.add_column(name, values[:, i].tolist())
    return dataset


def _compute_chunks(trainer, dataset: Dataset, folder: Path, starts: list[int], names: list[str]) -> None:
    args, accelerator = trainer.args, trainer.accelerator
    model = trainer.model
    engine = None
    if trainer.is_deepspeed_enabled:  # parameters are still on CPU (ZeRO-1/2) or sharded (ZeRO-3): place and gather
        from trl.models.utils import prepare_deepspeed

        engine = model = prepare_deepspeed(trainer.model, accelerator)
    was_training = model.training
    model.eval()
    total = len(dataset)
    done = total - sum(min(args.reference_chunk_rows, total - s) for s in starts)
    logger.info("reference log-probs: %d of %d rows to score, into %s", total - done, total, folder)
    try:
        for start in starts:
            end = min(start + args.reference_chunk_rows, total)
            loader = accelerator.prepare(DataLoader(dataset.select(range(start, end)), shuffle=False,
                                                    batch_size=args.per_device_eval_batch_size,
                                                    collate_fn=trainer.data_collator))
            rows = []
            with torch.no_grad(), trainer.compute_loss_context_manager(), reference_weights(
                    accelerator.unwrap_model(trainer.model)):
                for batch in loader:
                    rows.append(accelerator.gather_for_metrics(score_rows(trainer.scorer, model, batch)))
            values = torch.cat(rows).cpu()
            assert len(values) == end - start, (len(values), end - start)
            if accelerator.is_main_process:
                path = _chunk_path(folder, start)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.name}.tmp")
                save_file({"logps": values.contiguous()}, str(tmp), metadata={"columns": ",".join(names)})
                os.replace(tmp, path)  # a chunk is visible only once it is whole
            done += end - start
            logger.info("reference log-probs: %d/%d rows", done, total)
    finally:
        model.train(was_training)
        if engine is not None:
            engine.destroy()
