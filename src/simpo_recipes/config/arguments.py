"""Typed configuration for the training scripts.

Keys follow the reference SimPO repository (alignment-handbook style) so its YAML files run
unchanged; `parsing.parse_config` maps old spellings and rejects unknown keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import trl
from transformers import TrainingArguments

from simpo_recipes.errors import ConfigError
from simpo_recipes.objectives import OBJECTIVES


@dataclass
class ModelArguments:
    model_name_or_path: str = field(metadata={"help": "Local folder or hub name of the starting model."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer to load, if not the model's own."}
    )
    model_revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit)."})
    dtype: Literal["auto", "bfloat16", "float16", "float32"] | None = field(
        default=None, metadata={"help": "Weights dtype when loading; None keeps the default (float32)."}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "sdpa, eager (Gemma-2), flash_attention_2 ... None: transformers' choice."}
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code shipped with the checkpoint. Off unless a recipe needs it."}
    )
    fresh_start: bool = field(
        default=False, metadata={"help": "Start from model_name_or_path even if output_dir holds a run (another "
                                         "config, or finished): that run is moved to <output_dir>.previous-<time>."}
    )


@dataclass
class DataArguments:
    dataset_mixer: dict[str, float] = field(
        metadata={"help": "{hub name or local folder: fraction of its train split to use, in (0, 1]}."}
    )
    dataset_splits: list[str] = field(
        default_factory=lambda: ["train", "test"],
        metadata={"help": "Splits to load; names containing 'train' train, those containing 'test' evaluate."},
    )
    chat_template: str | None = field(
        default=None, metadata={"help": "Jinja chat template overriding the tokenizer's own."}
    )
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenization (datasets.map num_proc)."}
    )
    max_bad_fraction: float = field(
        default=0.05,
        metadata={"help": "Stop if more than this fraction of rows is malformed (missing columns, empty or "
                          "identical responses, broken role order). Over-length rows are counted separately."},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.dataset_mixer, dict) or not self.dataset_mixer:
            raise ConfigError("dataset_mixer must be a mapping {dataset: fraction}, e.g. {data/demo/prefs: 1.0}")
        for name, fraction in self.dataset_mixer.items():
            if not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
                raise ConfigError(f"dataset_mixer[{name!r}] = {fraction!r}: fractions must be in (0, 1]")
        if not 0 <= self.max_bad_fraction <= 1:
            raise ConfigError(f"max_bad_fraction = {self.max_bad_fraction}: must be in [0, 1]")


def accumulation_steps(total_batch_size: int, world_size: int, per_device: int, given: int = 1) -> int:
    """Gradient accumulation that makes world × micro-batch × accumulation = total batch."""
    per_step = world_size * per_device
    if total_batch_size <= 0 or total_batch_size % per_step:
        raise ConfigError(
            f"total_batch_size = {total_batch_size} is not a positive multiple of world size {world_size} "
            f"× per_device_train_batch_size {per_device} = {per_step}: change one of them"
        )
    derived = total_batch_size // per_step
    if given not in (1, derived):
        raise ConfigError(
            f"gradient_accumulation_steps = {given} contradicts total_batch_size = "
            f"{total_batch_size} (which gives {derived} on {world_size} process(es)): set only total_batch_size"
        )
    return derived


def derive_gradient_accumulation(args: TrainingArguments, total_batch_size: int | None) -> None:
    """Set gradient_accumulation_steps from total_batch_size for this run's world size.

    This keeps the optimizer's batch at the paper's 128 pairs on any GPU count."""
    if total_batch_size is not None:
        args.gradient_accumulation_steps = accumulation_steps(
            total_batch_size, args.world_size, args.per_device_train_batch_size, args.gradient_accumulation_steps)


def planned_batch(args: TrainingArguments, world_size: int | None = None) -> tuple[int, int, int]:
    """(world size, gradient accumulation, global batch) of this run, or of one on `world_size` processes."""
    world, accumulation = args.world_size, args.gradient_accumulation_steps
    if world_size is not None:
        world = world_size
        if getattr(args, "total_batch_size", None) is not None:
            accumulation = accumulation_steps(args.total_batch_size, world, args.per_device_train_batch_size)
    return world, accumulation, world * args.per_device_train_batch_size * accumulation


def batch_arithmetic(args: TrainingArguments, world_size: int | None = None) -> str:
    """The global batch spelled out, nanoGPT style."""
    world, accumulation, total = planned_batch(args, world_size)
    return (f"world size {world} × per-device batch {args.per_device_train_batch_size} × "
            f"gradient accumulation {accumulation} = global batch {total}")


@dataclass
class PreferenceConfig(TrainingArguments):
    """The preference stage: which objective (its hyperparameters are the objective's own dataclass,
    `simpo_recipes.objectives`), the data limits, the reference log-probs and the fast step."""

    objective: str = field(default="simpo", metadata={
        "help": "The loss: " + ", ".join(OBJECTIVES) + ". Its hyperparameters are top-level keys too."})
    reference_logps: Literal["cached", "live"] = field(default="cached", metadata={
        "help": "For objectives that need π_ref: cached (one pass over the data before training, saved in "
                "output_dir/reference_logps and reused) or live (a frozen copy of the model scores every batch)."})
    reference_chunk_rows: int = field(default=1024, metadata={
        "help": "Rows per saved chunk of the cached reference pass: a killed pass resumes at the last whole chunk."})
    max_length: int = field(default=2048, metadata={"help": "Longest prompt + response; longer pairs are dropped."})
    max_prompt_length: int = field(default=1800, metadata={"help": "Longest prompt; longer pairs are dropped."})
    total_batch_size: int | None = field(
        default=None, metadata={"help": "Global batch in pairs; sets gradient accumulation for any world size."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: the collator needs the ids."})
    # The fast step (docs/benchmarks.md); each part is switchable and tested equal to the reference.
    lm_head_chunk_size: int = field(
        default=256, metadata={"help": "Scored tokens per LM-head chunk (fp32 log-softmax, no [2B, T, V] logits); "
                                       "0: the model's full logits (the reference path when padding_free and "
                                       "prefix_sharing are false too)."}
    )
    padding_free: bool = field(
        default=True, metadata={"help": "Pack a micro-batch's sequences into one row: no compute on padding."}
    )
    prefix_sharing: bool = field(
        default=True, metadata={"help": "Compute each pair's prompt once; chosen and rejected both attend to it."}
    )
    # Diagnostics (training/diagnostics.py)
    likelihood_drop_warning: float | None = field(
        default=0.5, metadata={"help": "Warn once when the chosen responses' mean log-prob has fallen this far "
                                       "(nats per token) below its first logged value; null: never."}
    )
    kl_eval_prompts: int = field(
        default=0, metadata={"help": "At each evaluation, KL to the starting model on answers sampled for this "
                                     "many held-out prompts (eval_kl_to_start); 0: off."}
    )
    kl_max_new_tokens: int = field(default=256, metadata={"help": "Longest sampled answer for kl_eval_prompts."})

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective = {self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if self.reference_logps not in ("cached", "live"):
            raise ConfigError(f"reference_logps = {self.reference_logps!r}: choose cached or live")
        if not isinstance(self.reference_chunk_rows, int) or self.reference_chunk_rows <= 0:
            raise ConfigError(f"reference_chunk_rows = {self.reference_chunk_rows!r}: must be an integer > 0")
        if not isinstance(self.lm_head_chunk_size, int) or self.lm_head_chunk_size < 0:
            raise ConfigError(f"lm_head_chunk_size = {self.lm_head_chunk_size!r}: must be an integer ≥ 0 "
                              "(0: full logits)")
        if self.likelihood_drop_warning is not None and not self.likelihood_drop_warning > 0:
            raise ConfigError(f"likelihood_drop_warning = {self.likelihood_drop_warning}: must be > 0 (null: off)")
        if self.kl_eval_prompts < 0 or self.kl_max_new_tokens <= 0:
            raise ConfigError(f"kl_eval_prompts = {self.kl_eval_prompts} must be >= 0 and kl_max_new_tokens = "
                              f"{self.kl_max_new_tokens} > 0")
        if not 0 < self.max_prompt_length < self.max_length:
            raise ConfigError(
                f"max_prompt_length = {self.max_prompt_length} must be > 0 and < max_length = {self.max_length}"
            )
        super().__post_init__()
        derive_gradient_accumulation(self, self.total_batch_size)


@dataclass
class SFTConfig(trl.SFTConfig):
    total_batch_size: int | None = field(
        default=None, metadata={"help": "Global batch in sequences; sets gradient accumulation for any world size."}
    )
    # TRL defaults the old name to True, which transformers 5 reads with a FutureWarning: same default, new name
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "Old name of activation_checkpointing."})
    activation_checkpointing: bool | None = field(default=True, metadata={"help": "Recompute activations in backward."})

    def __post_init__(self) -> None:
        if self.max_length is None or self.max_length <= 0:
            raise ConfigError(f"max_length = {self.max_length}: must be a positive token count")
        super().__post_init__()
        derive_gradient_accumulation(self, self.total_batch_size)


@dataclass
class LoraArguments:
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of every weight."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scale numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Module names to adapt, e.g. [q_proj, v_proj]; None: every linear layer."})
    lora_modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained in full beside the adapters, e.g. [lm_head]."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: 4-bit base weights (bitsandbytes, GPU)."})
    load_in_8bit: bool = field(default=False, metadata={"help": "8-bit base weights (bitsandbytes, GPU)."})
    bnb_4bit_quant_type: str = field(default="nf4", metadata={"help": "nf4 or fp4."})
    use_bnb_nested_quant: bool = field(default=False, metadata={"help": "Quantize the quantization constants."})

    @property
    def quantized(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit

    def __post_init__(self) -> None:
        if self.quantized and not self.use_peft:
            raise ConfigError("load_in_4bit / load_in_8bit train adapters only: set use_peft: true as well")
        if self.load_in_4bit and self.load_in_8bit:
            raise ConfigError("load_in_4bit and load_in_8bit are both set: choose one")
        if self.lora_r <= 0 or self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_r = {self.lora_r}, lora_alpha = {self.lora_alpha} must be > 0 and "
                              f"lora_dropout = {self.lora_dropout} in [0, 1)")
        if self.bnb_4bit_quant_type not in ("nf4", "fp4"):
            raise ConfigError(f"bnb_4bit_quant_type = {self.bnb_4bit_quant_type!r}: choose nf4 or fp4")


STAGES = ("sft", "preference")


def stage_types(stage: str, objective: str = "simpo") -> tuple[type, ...]:
    """The dataclasses a stage's training config fills, in the order the scripts receive them; the
    preference stage's last one is its objective's hyperparameters."""
    if stage == "sft":
        return ModelArguments, DataArguments, SFTConfig, LoraArguments
    if stage != "preference":
        raise ConfigError(f"stage {stage!r}: choose one of {', '.join(STAGES)}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective = {objective!r}: choose one of {', '.join(OBJECTIVES)}")
    return ModelArguments, DataArguments, PreferenceConfig, LoraArguments, OBJECTIVES[objective]
