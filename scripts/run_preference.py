#!/usr/bin/env python
"""Preference stage, every objective: `python scripts/run_preference.py training_configs/X.yaml [--key=value ...]`
(also under `accelerate launch`; `scripts/run_simpo.py` is the same script). `objective:` chooses the
loss (default simpo); its hyperparameters are top-level keys. Rerunning the same command resumes
from the last checkpoint; the cached reference log-probs of a reference objective are reused."""
import logging

from transformers import set_seed

from simpo_recipes.config.parsing import parse_config
from simpo_recipes.data.loading import PREFERENCE_COLUMNS, load_mixture
from simpo_recipes.data.preprocess import add_mismatched_responses, prepare_preferences
from simpo_recipes.training.collator import PairCollator
from simpo_recipes.training.reporting import MetricsFileCallback
from simpo_recipes.training.runtime import (
    announce,
    load_model,
    load_tokenizer,
    resume_checkpoint,
    run_cli,
    save_final,
    setup_logging,
)
from simpo_recipes.training.trainer import PreferenceTrainer

logger = logging.getLogger("simpo_recipes")


def main() -> None:
    model_args, data_args, args, lora_args, objective = parse_config("preference")
    setup_logging(args)
    set_seed(args.seed)
    announce((model_args, data_args, args, lora_args, objective), args)
    logger.info("objective %s: %s; %s", objective.name, objective.formula,
                ", ".join(f"{k} {v}" for k, v in objective.hyperparameters().items() if v is not None))

    tokenizer = load_tokenizer(model_args, data_args)
    raw = load_mixture(data_args.dataset_mixer, data_args.dataset_splits, PREFERENCE_COLUMNS, args.seed)
    with args.main_process_first(desc="tokenizing"):
        splits = {
            split: prepare_preferences(ds, tokenizer, args.max_length, args.max_prompt_length,
                                       data_args.max_bad_fraction, name=f"{split} split",
                                       num_proc=data_args.preprocessing_num_workers)
            for split, ds in raw.items()
        }
        if objective.needs_kl_sequences:
            splits = {split: add_mismatched_responses(ds, args.max_length) for split, ds in splits.items()}

    live_reference = objective.needs_reference and args.reference_logps == "live" and not lora_args.use_peft
    trainer = PreferenceTrainer(
        model=load_model(model_args, args, lora_args),
        ref_model=load_model(model_args, args) if live_reference else None,
        objective=objective,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("test"),
        data_collator=PairCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[MetricsFileCallback(args.output_dir)],
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(args))
    if splits.get("test") is not None and args.eval_strategy != "no":
        trainer.evaluate()
    save_final(trainer, tokenizer)


if __name__ == "__main__":
    run_cli(main)
