"""A diverged run stops at once and says so; non-finite weights are never saved.

After every optimizer step the trainable weights are checked: a NaN or inf loss or gradient makes
them non-finite in that very step (AdamW's update of a NaN gradient is NaN), while a step that
fp16's loss scaler skips leaves them finite, so this check has no false alarm. The check runs
before the step is logged or checkpointed, on every rank (ZeRO-3: each rank's shard), with one
all-reduce so that all ranks stop together. It works the same under TRL's SFTTrainer and the
preference trainer, as a TrainerCallback.
"""
from __future__ import annotations

import math

import torch
from transformers import TrainerCallback

from simpo_recipes.errors import UserError

WATCHED = ("loss", "grad_norm", "learning_rate")


class DivergedError(UserError):
    """The weights became NaN or inf; the message has the step, the last finite values and what to try."""


def weights_finite(model: torch.nn.Module, device: torch.device | str | None = None) -> bool:
    """Whether every trainable weight (the only ones training changes) is finite, over all processes."""
    checks = [torch.isfinite(t).all() for p in model.parameters() if p.requires_grad
              for t in [getattr(p, "ds_tensor", p)] if t.numel()]  # ZeRO-3: this rank's shard
    finite = torch.stack([c.to(checks[0].device) for c in checks]).all() if checks else torch.tensor(True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        flag = finite.to(device or finite.device, torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())
    return bool(finite.item())


class DivergenceCallback(TrainerCallback):
    """Stops training with DivergedError at the first optimizer step that leaves a weight non-finite."""

    def __init__(self) -> None:
        self.last_finite: dict[str, float] = {}
        self.last_finite_step = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = {k: logs[k] for k in WATCHED if isinstance((logs or {}).get(k), (int, float))}
        if values and all(math.isfinite(v) for v in values.values()):
            self.last_finite, self.last_finite_step = values, state.global_step

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None and not weights_finite(model, args.device):
            raise DivergedError(self.report(args, state.global_step))

    def report(self, args, step: int) -> str:
        last = ", ".join(f"{k} {v:.4g}" for k, v in self.last_finite.items())
        seen = f"last finite values logged (step {self.last_finite_step}): {last}" if last else \
            "no finite values were logged before it (logging_steps=1 shows every step)"
        return (f"training diverged: optimizer step {step} left the weights NaN/inf (a loss or gradient that "
                f"was not finite, or an update too large); {seen}. Nothing of step {step} was saved. "
                f"Try a lower learning_rate (now "
                f"{args.learning_rate:g}), gradient clipping (max_grad_norm, now {args.max_grad_norm:g}), a longer "
                f"warmup (warmup_steps, now {args.warmup_steps:g}), bf16 rather than fp16, and check the data; "
                "a changed config starts over: --fresh_start or a new output_dir")
