"""LoRA (peft) for both stages, and QLoRA where bitsandbytes and a GPU exist.

A stage trained with LoRA saves its adapter in `output_dir/adapter/` and the adapter merged into
the starting model in `output_dir`, so the next stage and evaluation load a plain model."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch

from simpo_recipes.config.arguments import LoraArguments
from simpo_recipes.errors import ConfigError

logger = logging.getLogger(__name__)


def check_quantization(lora_args: LoraArguments, use_cpu: bool) -> None:
    """QLoRA needs bitsandbytes and a CUDA GPU; say so before any data or weights are loaded."""
    if not lora_args.quantized:
        return
    missing = [what for what, absent in (
        ("a CUDA GPU", use_cpu or not torch.cuda.is_available()),
        ("the bitsandbytes package (pip install bitsandbytes)", importlib.util.find_spec("bitsandbytes") is None),
    ) if absent]
    if missing:
        raise ConfigError(f"load_in_{'4' if lora_args.load_in_4bit else '8'}bit (QLoRA) needs "
                          f"{' and '.join(missing)}: use plain LoRA (use_peft: true, no load_in_*bit) here")


def quantization_config(lora_args: LoraArguments, compute_dtype: torch.dtype):
    if not lora_args.quantized:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=lora_args.load_in_4bit, load_in_8bit=lora_args.load_in_8bit,
        bnb_4bit_quant_type=lora_args.bnb_4bit_quant_type, bnb_4bit_use_double_quant=lora_args.use_bnb_nested_quant,
        bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=compute_dtype,  # ZeRO-3 shards it like the rest
    )


def add_adapters(model, lora_args: LoraArguments, gradient_checkpointing: bool):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if lora_args.quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    model = get_peft_model(model, LoraConfig(
        r=lora_args.lora_r, lora_alpha=lora_args.lora_alpha, lora_dropout=lora_args.lora_dropout,
        target_modules=lora_args.lora_target_modules or "all-linear",
        modules_to_save=lora_args.lora_modules_to_save, task_type="CAUSAL_LM",
    ))
    if gradient_checkpointing:  # frozen embeddings: checkpointed blocks need an input that requires grad
        model.enable_input_require_grads()
    trainable, total = model.get_nb_trainable_parameters()
    logger.info("LoRA: %s of %s parameters trainable (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return model


def save_merged(trainer, dtype: torch.dtype) -> None:
    """Adapter to output_dir/adapter/, then (rank 0) the starting model with it merged to output_dir."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    output_dir = Path(trainer.args.output_dir)
    trainer.save_model(str(output_dir / "adapter"))
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        base_name = trainer.model.peft_config["default"].base_model_name_or_path
        # full precision on CPU: a merge into 4-bit weights would round the adapter away
        base = AutoModelForCausalLM.from_pretrained(base_name, dtype=dtype, device_map="cpu")
        merged = PeftModel.from_pretrained(base, output_dir / "adapter").merge_and_unload()
        merged.save_pretrained(output_dir)
        logger.info("merged the LoRA adapter into %s", base_name)
