"""The `onpolicy:` block of a recipe: which prompts, how many samples, which reward model."""
from __future__ import annotations

from dataclasses import dataclass, field

from simpo_recipes.config.parsing import build
from simpo_recipes.errors import ConfigError
from simpo_recipes.evaluation.generation import BACKENDS

REWARD_TYPES = ("sequence_classification", "pairwise", "judge", "program")
DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass
class RewardModelConfig:
    type: str = field(metadata={"help": "sequence_classification (one score per answer, e.g. ArmoRM), pairwise "
                                        "(PairRM-style cross-encoder over answer pairs), judge (an OpenAI-compatible "
                                        "endpoint rating each answer) or program (a Python function)."})
    name: str = field(metadata={"help": "Hub name or local folder (models); the judge's model name (judge; "
                                        "JUDGE_MODEL wins); module:function(prompt, response) -> float (program)."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Run model code shipped with the checkpoint (ArmoRM needs it). Only a recipe turns it on."})
    dtype: str = field(default="auto", metadata={"help": "Weights dtype: auto (the checkpoint's), bfloat16, float16, float32."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass; concurrent requests for a judge."})
    max_length: int | None = field(default=None, metadata={
        "help": "Longest scored sequence, in tokens (None: the model's max_position_embeddings). Longer "
                "samples are never cut: they stay unscored and are counted."})

    def __post_init__(self) -> None:
        if self.type not in REWARD_TYPES:
            raise ConfigError(f"reward_model.type {self.type!r}: choose one of {', '.join(REWARD_TYPES)}")
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError("reward_model.name is required")
        if self.type == "program" and ":" not in self.name:
            raise ConfigError(f"reward_model.name {self.name!r}: a program reward is named module:function")
        if self.dtype not in DTYPES:
            raise ConfigError(f"reward_model.dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if self.batch_size < 1 or (self.max_length is not None and self.max_length < 1):
            raise ConfigError(f"reward_model: batch_size and max_length must be ≥ 1, got {self.batch_size}, "
                              f"{self.max_length}")


@dataclass
class OnPolicyConfig:
    reward_model: RewardModelConfig = field(metadata={"help": "What scores the samples (see RewardModelConfig)."})
    output_dir: str = field(metadata={"help": "Dataset folder: <split>.jsonl for dataset_mixer, report, work files."})
    model: str | None = field(default=None, metadata={
        "help": "Policy that samples; None: the model the recipe's preference stage starts from."})
    prompts: str = field(default="HuggingFaceH4/ultrafeedback_binarized", metadata={
        "help": "Hub name or local folder whose prompts are answered (sorted, unique)."})
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train_prefs", "test": "test_prefs"}, metadata={
        "help": "{output split: split of `prompts`}; output names must contain 'train' or 'test'."})
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt text."})
    max_prompts: int | None = field(default=None, metadata={
        "help": "Keep only the first N sorted prompts of each split (smoke runs); None: all."})
    seeds: list[int] = field(default_factory=lambda: [13, 21, 42, 79, 100], metadata={
        "help": "One sample per seed per prompt; a sample is keyed by (prompt_id, seed)."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass."})
    max_new_tokens: int = field(default=4096, metadata={
        "help": "Longest sample; one that reaches it without an end of turn is truncated."})
    batch_size: int = field(default=64, metadata={"help": "Requests per generation call."})
    backend: str = field(default="auto", metadata={"help": "auto: vLLM if installed and on GPU, else transformers."})

    def __post_init__(self) -> None:
        if isinstance(self.reward_model, dict):
            self.reward_model = build(self.reward_model, (RewardModelConfig,), "reward_model")[0]
        if not isinstance(self.reward_model, RewardModelConfig):
            raise ConfigError("reward_model must be a mapping {type, name, ...}")
        if not isinstance(self.splits, dict) or not self.splits:
            raise ConfigError("splits must be a mapping {output split: source split}, e.g. {train: train_prefs}")
        for name in self.splits:
            if "train" not in name and "test" not in name:
                raise ConfigError(f"splits: output split {name!r} must contain 'train' or 'test'")
        seeds = self.seeds
        if not isinstance(seeds, list) or len(seeds) < 2 or not all(isinstance(s, int) for s in seeds):
            raise ConfigError(f"seeds = {seeds!r}: give at least two integer seeds (one sample each)")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds = {seeds!r}: a seed listed twice would give the same sample twice")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError(f"temperature must be > 0, top_p in (0, 1], max_new_tokens and batch_size ≥ 1; got "
                              f"{self.temperature}, {self.top_p}, {self.max_new_tokens}, {self.batch_size}")
        if self.max_prompts is not None and self.max_prompts < 1:
            raise ConfigError(f"max_prompts = {self.max_prompts}: must be ≥ 1 (or null for all)")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
