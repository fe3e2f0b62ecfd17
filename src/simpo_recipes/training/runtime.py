"""What both training scripts do around the trainer: logging, the run folder, loading, saving."""
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

from simpo_recipes.config.arguments import (
    ConfigError,
    DataArguments,
    LoraArguments,
    ModelArguments,
    batch_arithmetic,
    planned_batch,
)
from simpo_recipes.data.chat import ChatTemplateError, check_template
from simpo_recipes.pipeline.launch import check_fsdp
from simpo_recipes.training.divergence import DivergedError, weights_finite
from simpo_recipes.training.lora import (
    add_adapters,
    check_quantization,
    quantization_config,
    save_merged,
)
from simpo_recipes.training.model_card import write_model_card
from simpo_recipes.training.run_folder import RunFolder, claim
from simpo_recipes.training.tracking import check_report_to

logger = logging.getLogger("simpo_recipes")


def setup_logging(args: TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout,
                        level=logging.WARNING)
    logger.setLevel(logging.INFO if args.should_log else logging.WARNING)
    logging.getLogger("simpo_recipes.data.preprocess").setLevel(logger.level)
    transformers.utils.logging.set_verbosity_warning()


def announce(configs: tuple, args: TrainingArguments) -> RunFolder:
    """Check the launch fits this machine, print the batch arithmetic, and claim output_dir (one
    run at a time, resuming only the run it holds; a finished stage ends here). Returns the claim."""
    check_fsdp(os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true", use_cpu(args))
    check_report_to(args.report_to)
    for lora_args in (c for c in configs if isinstance(c, LoraArguments)):
        check_quantization(lora_args, use_cpu(args))
    logger.info(batch_arithmetic(args))
    return claim(configs)


def _looks_local(name: str) -> bool:
    """A path rather than a hub id (`owner/name`): absolute, relative (./, ~), deeper than one
    slash, or under a folder that exists here."""
    path = Path(name).expanduser()
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or path.exists()
            or (len(path.parts) > 1 and Path(path.parts[0]).is_dir()))


def _from_pretrained(loader, name: str, **kwargs):
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as e:
        if Path(name).is_dir():
            raise
        if _looks_local(name):
            raise ConfigError(f"model_name_or_path {name!r}: no such model folder here (run the stage that writes "
                              "it first, or fix the path)") from None
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
    try:
        check_template(tokenizer)
    except ChatTemplateError as e:
        where = ("`chat_template` of the training config" if data_args.chat_template is not None else
                 "the tokenizer's own chat template (tokenizer_config.json or chat_template.jinja)")
        raise ChatTemplateError(f"{where}: {e}") from None
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
    if args.activation_checkpointing:
        model.config.use_cache = False
    if lora_args.use_peft:
        model = add_adapters(model, lora_args, args.activation_checkpointing)
    return model


def save_final(trainer: transformers.Trainer, tokenizer: PreTrainedTokenizerBase, run: RunFolder) -> None:
    """Model + tokenizer (chat template included), loadable with the Auto classes, and the model card;
    then the stage is marked finished. Non-finite weights are never saved as the final model."""
    if not weights_finite(trainer.model, trainer.args.device):
        raise DivergedError(f"the trained weights are not finite (NaN/inf): no final model was saved in "
                            f"{trainer.args.output_dir}. Try a lower learning_rate or max_grad_norm")
    if trainer.is_world_process_zero():
        write_model_card(trainer.args.output_dir, planned_batch(trainer.args)[2])
    # with push_to_hub, Trainer.push_to_hub writes TRL's / transformers' card over ours before uploading
    trainer.create_model_card = lambda *args, **kwargs: None
    if hasattr(trainer.model, "peft_config"):
        save_merged(trainer, compute_dtype(trainer.args))
    else:
        trainer.save_model(trainer.args.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(trainer.args.output_dir)
        trainer.model.config.use_cache = True
        trainer.model.config.save_pretrained(trainer.args.output_dir)
    logger.info("saved final model to %s", trainer.args.output_dir)
    run.finish(trainer)
