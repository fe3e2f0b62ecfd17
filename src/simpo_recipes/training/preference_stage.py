"""The preference stage as a function: what scripts/run_preference.py runs, and what `make paper` calls
in one process for each of its runs (no interpreter start and imports per run)."""
from __future__ import annotations

import logging

from transformers import set_seed

from simpo_recipes.config.parsing import parse_config
from simpo_recipes.data.examples import split_examples
from simpo_recipes.data.loading import PREFERENCE_COLUMNS, load_mixture
from simpo_recipes.data.preprocess import add_mismatched_responses, prepare_preferences
from simpo_recipes.training.collator import PairCollator
from simpo_recipes.training.diagnostics import LogProbTrendCallback, add_kl_eval
from simpo_recipes.training.runtime import (
    announce,
    load_model,
    load_tokenizer,
    save_final,
    setup_logging,
)
from simpo_recipes.training.trainer import PreferenceTrainer

logger = logging.getLogger("simpo_recipes")


def run_preference_stage(argv: list[str] | None = None, callbacks: tuple = ()) -> PreferenceTrainer:
    """Train, evaluate on the test split and save one preference stage: argv = [config.yaml, --key=value, ...]
    (default sys.argv[1:]); `callbacks`: more TrainerCallbacks (a measurement's). A stage that already
    finished in its output_dir raises SystemExit(0)."""
    model_args, data_args, args, lora_args, objective = parse_config("preference", argv)
    setup_logging(args)
    set_seed(args.seed)
    run = announce((model_args, data_args, args, lora_args, objective), args)  # a finished stage ends here
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
    logger.info("\n".join(split_examples(tokenizer, splits)))
    run.check_tokenized(splits)

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
        # the log-prob trend first: it adds to the logs that metrics.jsonl then writes
        callbacks=[LogProbTrendCallback(args.likelihood_drop_warning, args.learning_rate), *run.callbacks(), *callbacks],
    )
    add_kl_eval(trainer, model_args.model_name_or_path, splits.get("test"), args.kl_eval_prompts,
                args.kl_max_new_tokens)
    run.train(trainer)  # resumes from the last complete checkpoint
    if splits.get("test") is not None and args.eval_strategy != "no":
        trainer.evaluate()
    save_final(trainer, tokenizer, run)
    return trainer
