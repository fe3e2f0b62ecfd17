#!/usr/bin/env python
"""SimPO stage: `python scripts/run_simpo.py training_configs/X-simpo.yaml [--key=value ...]`
(also under `accelerate launch`). Rerunning the same command resumes from the last complete checkpoint;
a finished stage is skipped (README: What a run folder guarantees)."""
import logging

from transformers import set_seed

from simpo_recipes.cli import run_cli
from simpo_recipes.config.arguments import STAGE_CONFIGS
from simpo_recipes.config.parsing import parse_config
from simpo_recipes.data.loading import PREFERENCE_COLUMNS, load_mixture
from simpo_recipes.data.preprocess import prepare_preferences
from simpo_recipes.training.collator import PairCollator
from simpo_recipes.training.run_folder import interrupted_hint
from simpo_recipes.training.runtime import (
    announce,
    load_model,
    load_tokenizer,
    save_final,
    setup_logging,
)
from simpo_recipes.training.trainer import SimPOTrainer

logger = logging.getLogger("simpo_recipes")


def main() -> None:
    model_args, data_args, args, lora_args = parse_config(STAGE_CONFIGS["simpo"])
    setup_logging(args)
    set_seed(args.seed)
    run = announce((model_args, data_args, args, lora_args), args)  # a finished stage ends here
    gamma_source = "gamma" if args.gamma is not None else "gamma_beta_ratio × beta"
    logger.info("SimPO: beta %s, effective gamma %.4g (%s), loss %s", args.beta, args.effective_gamma,
                gamma_source, args.loss_type)

    tokenizer = load_tokenizer(model_args, data_args)
    raw = load_mixture(data_args.dataset_mixer, data_args.dataset_splits, PREFERENCE_COLUMNS, args.seed)
    with args.main_process_first(desc="tokenizing"):
        splits = {
            split: prepare_preferences(ds, tokenizer, args.max_length, args.max_prompt_length,
                                       data_args.max_bad_fraction, name=f"{split} split",
                                       num_proc=data_args.preprocessing_num_workers)
            for split, ds in raw.items()
        }
    run.check_tokenized(splits)

    trainer = SimPOTrainer(
        model=load_model(model_args, args, lora_args),
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("test"),
        data_collator=PairCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=run.callbacks(),
    )
    run.train(trainer)  # resumes from the last complete checkpoint
    if splits.get("test") is not None and args.eval_strategy != "no":
        trainer.evaluate()
    save_final(trainer, tokenizer, run)


if __name__ == "__main__":
    run_cli(main, interrupted=interrupted_hint)
