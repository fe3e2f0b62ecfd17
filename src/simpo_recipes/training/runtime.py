"""What both training scripts do around the trainer: logging, loading, resuming, saving."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from simpo_recipes.config.arguments import (
    ConfigError,
    DataArguments,
    LoraArguments,
    ModelArguments,
    batch_arithmetic,
)
from simpo_recipes.config.parsing import to_yaml
from simpo_recipes.data.chat import ChatTemplateError, check_template
from simpo_recipes.data.loading import DataError
from simpo_recipes.pipeline.launch import check_fsdp
from simpo_recipes.training.lora import (
    add_adapters,
    check_quantization,
    quantization_config,
    save_merged,
)

logger = logging.getLogger("simpo_recipes")


def setup_logging(args: TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout,
                        level=logging.WARNING)
    logger.setLevel(logging.INFO if args.should_log else logging.WARNING)
    logging.getLogger("simpo_recipes.data.preprocess").setLevel(logger.level)
    transformers.utils.logging.set_verbosity_warning()


def run_cli(main) -> None:
    """Run a script's main(); configuration and data problems end with their message, not a traceback."""
    try:
        main()
    except (ConfigError, DataError, ChatTemplateError) as e:
        sys.exit(f"error: {e}")


def announce(configs: tuple, args: TrainingArguments) -> None:
    """Check the launch fits this machine, print the batch arithmetic and save the resolved config
    beside the run's outputs."""
    check_fsdp(os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true", use_cpu(args))
    for lora_args in (c for c in configs if isinstance(c, LoraArguments)):
        check_quantization(lora_args, use_cpu(args))
    logger.info(batch_arithmetic(args))
    if args.process_index == 0:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_dir) / "run_config.yaml").write_text(to_yaml(configs))


def _from_pretrained(loader, name: str, **kwargs):
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as e:
        if Path(name).is_dir():
            raise
        offline = " (HF_HUB_OFFLINE=1)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        raise ConfigError(
            f"model_name_or_path {name!r} is not a local folder and is not in the Hugging Face cache{offline}: "
            f"download it (huggingface-cli download {name}) or give a local path. ({str(e)[:160]})"
        ) from None


def load_tokenizer(model_args: ModelArguments, data_args: DataArguments) -> PreTrainedTokenizerBase:
    tokenizer = _from_pretrained(
        AutoTokenizer, model_args.tokenizer_name_or_path or model_args.model_name_or_path,
        revision=model_args.model_revision, trust_remote_code=model_args.trust_remote_code,
    )
    if data_args.chat_template is not None:
        tokenizer.chat_template = data_args.chat_template
    if tokenizer.pad_token is None:  # padding is masked everywhere, so any id will do
        tokenizer.pad_token = tokenizer.eos_token
    check_template(tokenizer)
    return tokenizer


def use_cpu(args: TrainingArguments) -> bool:
    return args.use_cpu or not torch.cuda.is_available()


def compute_dtype(args: TrainingArguments) -> torch.dtype:
    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32


def load_model(model_args: ModelArguments, args: TrainingArguments, lora_args: LoraArguments | None = None):
    """The starting model (with LoRA adapters when `lora_args` asks for them)."""
    lora_args = lora_args or LoraArguments()
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model = _from_pretrained(
        AutoModelForCausalLM, model_args.model_name_or_path, revision=model_args.model_revision,
        trust_remote_code=model_args.trust_remote_code, attn_implementation=model_args.attn_implementation,
        dtype=dtype, quantization_config=quantization_config(lora_args, compute_dtype(args)),
    )
    if args.gradient_checkpointing:
        model.config.use_cache = False
    if lora_args.use_peft:
        model = add_adapters(model, lora_args, args.gradient_checkpointing)
    return model


def resume_checkpoint(args: TrainingArguments) -> str | None:
    """Rerunning the same command continues from the last checkpoint in output_dir."""
    if not Path(args.output_dir).is_dir():
        return None
    checkpoint = get_last_checkpoint(args.output_dir)
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    return checkpoint


def save_final(trainer: transformers.Trainer, tokenizer: PreTrainedTokenizerBase) -> None:
    """Model + tokenizer (chat template included), loadable with the Auto classes."""
    if hasattr(trainer.model, "peft_config"):
        save_merged(trainer, compute_dtype(trainer.args))
    else:
        trainer.save_model(trainer.args.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(trainer.args.output_dir)
        trainer.model.config.use_cache = True
        trainer.model.config.save_pretrained(trainer.args.output_dir)
    logger.info("saved final model to %s", trainer.args.output_dir)
