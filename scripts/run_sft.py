#!/usr/bin/env python
"""SFT stage: `python scripts/run_sft.py training_configs/X-sft.yaml [--key=value ...]`
(also under `accelerate launch`). Loss on every assistant turn only; nothing is truncated."""
import logging

from transformers import set_seed
from trl import SFTTrainer

from simpo_recipes.config.parsing import parse_config
from simpo_recipes.data.loading import SFT_COLUMNS, load_mixture
from simpo_recipes.data.preprocess import prepare_conversations
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

logger = logging.getLogger("simpo_recipes")


def main() -> None:
    model_args, data_args, args, lora_args = parse_config("sft")
    setup_logging(args)
    set_seed(args.seed)
    announce((model_args, data_args, args, lora_args), args)

    tokenizer = load_tokenizer(model_args, data_args)
    raw = load_mixture(data_args.dataset_mixer, data_args.dataset_splits, SFT_COLUMNS, args.seed)
    with args.main_process_first(desc="tokenizing"):
        # tokenized here (one BOS, assistant mask from the chat template); TRL builds labels from the mask
        splits = {
            split: prepare_conversations(ds, tokenizer, args.max_length, data_args.max_bad_fraction,
                                         name=f"{split} split", num_proc=data_args.preprocessing_num_workers)
            for split, ds in raw.items()
        }

    trainer = SFTTrainer(
        model=load_model(model_args, args, lora_args),
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits.get("test"),
        processing_class=tokenizer,
        callbacks=[MetricsFileCallback(args.output_dir)],
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(args))
    if splits.get("test") is not None and args.eval_strategy != "no":
        trainer.evaluate()
    save_final(trainer, tokenizer)


if __name__ == "__main__":
    run_cli(main)
