#!/usr/bin/env python
"""Preference stage, every objective: `python scripts/run_preference.py training_configs/X.yaml [--key=value ...]`
(also under `accelerate launch`; `scripts/run_simpo.py` is the same script). `objective:` chooses the
loss (default simpo); its hyperparameters are top-level keys. Rerunning the same command resumes
from the last complete checkpoint, or skips a finished stage (README: What a run folder guarantees);
the cached reference log-probs of a reference objective are reused."""
from simpo_recipes.cli import run_cli
from simpo_recipes.training.preference_stage import run_preference_stage
from simpo_recipes.training.run_folder import interrupted_hint

if __name__ == "__main__":
    run_cli(run_preference_stage, interrupted=interrupted_hint)
