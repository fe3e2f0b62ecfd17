"""Experiment tracking through `report_to` (transformers' own callbacks): TensorBoard and Weights &
Biases are pinned in requirements.txt (the `tracking` extra of the package). What a run cannot log
to is an error before any model loads, not a traceback once the trainer starts."""
from __future__ import annotations

import netrc
import os

from simpo_recipes.errors import ConfigError

EXTRA = "pip install -e '.[tracking]' (pinned: tensorboard, wandb)"


def _wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:  # where `wandb login` keeps the key
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def check_report_to(report_to: list[str]) -> None:
    """Every integration named in report_to is installed and, for W&B, can log (a key, or offline)."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK, get_available_reporting_integrations

    available = get_available_reporting_integrations()
    for name in report_to:
        if name not in INTEGRATION_TO_CALLBACK:
            raise ConfigError(f"report_to: {name!r} is not an integration transformers knows; choose from "
                              f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))} or none")
        if name not in available:
            hint = EXTRA if name in ("tensorboard", "wandb") else f"install {name}'s package"
            raise ConfigError(f"report_to: {name} is not installed: {hint}")
    mode = os.environ.get("WANDB_MODE", "").lower()
    if "wandb" in report_to and mode not in ("offline", "disabled", "dryrun") and not _wandb_key_configured():
        raise ConfigError("report_to: wandb has no API key: set WANDB_API_KEY (or run `wandb login`), or set "
                          "WANDB_MODE=offline to log locally and `wandb sync` later")
