"""The SimPO step benchmark (`scripts/bench_simpo.py`): model shapes, pairs, and one contender's run.

Each contender trains the same random-init Llama- or Gemma-2-shaped model on the same tokenized
pairs in the same order (sequential sampling), in its own process (or its own 2-process DeepSpeed
launch); the script compares the results.
"""
from __future__ import annotations

import copy
import os
import resource
import statistics
import time

import numpy as np
import psutil
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    LlamaConfig,
    TrainerCallback,
)

from simpo_recipes.config.arguments import PreferenceConfig
from simpo_recipes.data.preprocess import prepare_preferences
from simpo_recipes.objectives import DPO, SimPO
from simpo_recipes.training.collator import PairCollator
from simpo_recipes.training.trainer import PreferenceTrainer

SHAPES = {
    # Llama-3's 128,256-token vocabulary on a small body: the LM head dominates compute and memory.
    "head-heavy": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=1, vocab_size=128256),
    # Llama-3-8B proportions (GQA 4:1, MLP 3.5×, LM head ~7% of the matmul FLOPs) at 1/8 width.
    "body-heavy": dict(hidden_size=512, intermediate_size=1792, num_hidden_layers=4, num_attention_heads=8,
                       num_key_value_heads=2, vocab_size=2048),
    # Gemma-2-9B's proportions (head_dim 256 → q wider than hidden, GQA 2:1, tied head ~10% of the matmul
    # FLOPs) at 1/8 width, with its attention and final soft caps and a sliding window the lengths cross.
    "gemma2-shaped": dict(family="gemma2", hidden_size=448, intermediate_size=1792, num_hidden_layers=4,
                          num_attention_heads=8, num_key_value_heads=4, head_dim=64, vocab_size=3072,
                          sliding_window=128, attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
    # Llama-3.2-1B's dimensions (untied head), for MFU on a GPU; too slow for a CPU run.
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256),
    # 4 of Llama-3-8B's 32 layers with its real head and vocabulary: the head's share of a real step's
    # memory at full width (a GPU shape).
    "llama8b-layers": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=4, num_attention_heads=32,
                           num_key_value_heads=8, vocab_size=128256),
}
# UltraFeedback-like token lengths under the Llama-3 template, as log-normal (median, sigma): short
# prompts with a long tail, responses of a few hundred tokens. Approximate: shapes, not measurements.
LENGTHS = {"prompt": (110, 0.9), "chosen": (260, 0.6), "rejected": (230, 0.7)}
CONTENDERS = ("ours", "limit", "ours-reference", "ours-dpo", "trl-cpo-simpo", "trl-dpo")
ZERO3_CONTENDERS = ("ours", "trl-cpo-simpo")
# One-token words under Llama-3's BPE (with their leading space): n words make ~n tokens.
WORDS = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "with", "was", "on", "be", "by", "at",
         "this", "from", "or", "an", "are", "but", "not", "have"]


def make_pairs(tokenizer, lengths: list[tuple[int, int, int]], vocab_size: int, seed: int = 0) -> list[dict]:
    """Tokenized pairs through the real data path, with about (prompt, chosen, rejected) tokens each;
    ids are folded into `vocab_size` for models smaller than the tokenizer."""
    rng = np.random.default_rng(seed)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS, size=max(1, n)))

    rows = [{"prompt": text(p), "chosen": [{"role": "assistant", "content": text(c)}],
             "rejected": [{"role": "assistant", "content": text(r)}]} for p, c, r in lengths]
    ds = prepare_preferences(Dataset.from_list(rows), tokenizer, max_length=1 << 20, max_prompt_length=1 << 19,
                             max_bad_fraction=0.0, name="benchmark pairs")
    keys = ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")
    return [{k: [i % vocab_size for i in row[k]] for k in keys} for row in ds]


def ultrafeedback_lengths(n: int, scale: float, seed: int = 0) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(seed)
    draws = [rng.lognormal(np.log(median * scale), sigma, n) for median, sigma in LENGTHS.values()]
    return [tuple(max(1, int(x)) for x in triple) for triple in zip(*draws)]


class StepTimer(TrainerCallback):
    """Wall and process-CPU time between consecutive optimizer steps (data, forward, backward, optimizer).
    CPU time is the work done: on a shared machine it moves less than wall time."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.marks.append((time.perf_counter(), time.process_time()))

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.marks.append((time.perf_counter(), time.process_time()))


def build_model(shape: dict, dtype: torch.dtype, device: str):
    torch.manual_seed(0)
    shape = dict(shape)
    if shape.pop("family", "llama") == "gemma2":  # tied head, eager attention (its soft cap), as Gemma-2 ships
        config = Gemma2Config(**shape, max_position_embeddings=32768, pad_token_id=0)
        config._attn_implementation = "eager"
    else:
        config = LlamaConfig(**shape, max_position_embeddings=32768, tie_word_embeddings=False, pad_token_id=0)
        config._attn_implementation = "sdpa"
    return AutoModelForCausalLM.from_config(config, dtype=dtype).to(device)


class LimitTrainer(PreferenceTrainer):
    """The limit a SimPO step is measured against: one forward and backward of the plain token-level
    NLL over exactly the tokens the step must see — each prompt once, chosen, rejected, no padding,
    the chunked head — with no objective and no metrics."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sums, counts = self.scorer(model, inputs)
        loss = -sums.sum() / counts.sum()
        return (loss, None) if return_outputs else loss


def _common(spec: dict) -> dict:
    return dict(output_dir=spec["output_dir"], per_device_train_batch_size=spec["batch"], max_steps=spec["steps"],
                learning_rate=1e-6, train_sampling_strategy="sequential", save_strategy="no", logging_steps=10**6,
                report_to="none", disable_tqdm=True, bf16=False, activation_checkpointing=False,
                remove_unused_columns=False, use_cpu=spec["device"] == "cpu", seed=0)


def make_trainer(name: str, model, rows: list[dict], spec: dict):
    """The contender's own trainer; TRL's get our token ids in their own collators' format."""
    if name.startswith("ours") or name == "limit":
        fast = dict(lm_head_chunk_size=0, padding_free=False, prefix_sharing=False) if name == "ours-reference" else {}
        # ours-dpo: DPO (β 0.01) with the cached reference pass, which runs before training, outside the timed steps
        objective = DPO(beta=0.01) if name == "ours-dpo" else SimPO(beta=spec["beta"], gamma=spec["gamma"])
        args = PreferenceConfig(**_common(spec), objective=objective.name, max_length=1 << 20,
                                max_prompt_length=1 << 19, **fast)
        trainer_class = LimitTrainer if name == "limit" else PreferenceTrainer
        return trainer_class(model=model, args=args, objective=objective, train_dataset=Dataset.from_list(rows),
                             data_collator=PairCollator(pad_token_id=0))
    strings = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}])
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(0)  # padding is masked; id 0 fits every vocabulary
    if name == "trl-cpo-simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = CPOConfig(**_common(spec), loss_type="simpo", cpo_alpha=0.0, simpo_gamma=spec["gamma"],
                         beta=spec["beta"], max_length=None)
        trainer = CPOTrainer(model=model, args=args, train_dataset=strings, processing_class=tokenizer)
        features = []
        for row in rows:
            prompt, feature = row["prompt_input_ids"], {}
            for side in ("chosen", "rejected"):
                ids = prompt + row[f"{side}_input_ids"]
                feature |= {f"{side}_input_ids": ids, f"{side}_attention_mask": [1] * len(ids),
                            f"{side}_labels": [-100] * len(prompt) + row[f"{side}_input_ids"]}
            features.append(feature | {"prompt_input_ids": prompt, "prompt_attention_mask": [1] * len(prompt)})
    else:
        from trl import DPOConfig, DPOTrainer

        args = DPOConfig(**_common(spec), beta=0.01, max_length=None, precompute_ref_log_probs=False)
        ref_model = copy.deepcopy(model).eval()
        trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=strings,
                             processing_class=tokenizer)
        features = [{"prompt_ids": r["prompt_input_ids"], "chosen_ids": r["chosen_input_ids"],
                     "rejected_ids": r["rejected_input_ids"]} for r in rows]
    trainer.train_dataset = Dataset.from_list(features)
    return trainer


def memory_mib(device: str, peak: bool) -> float:
    """Peak or current memory: RSS of this process on CPU, allocated tensors on CUDA."""
    if device.startswith("cuda"):
        return (torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()) / 2**20
    if peak:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return psutil.Process().memory_info().rss / 2**20


def loss_and_grads(trainer, model, batch) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = trainer.compute_loss(model, trainer._prepare_inputs(batch))
    loss.backward()
    return loss.item(), [p.grad.detach().clone() for p in model.parameters()]


def numerics(name: str, trainer, rows: list[dict], spec: dict) -> tuple[float, float] | tuple[None, None]:
    """|Δ loss| and max |Δ grad| against the plain fp32 SimPO path, on an fp32 copy of the trained model."""
    if name in ("trl-dpo", "ours-dpo", "limit") or not spec["check"]:
        return None, None  # DPO, NLL: other objectives
    model = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.model)).float().train()
    check = rows[: min(2, spec["batch"])]  # two pairs: a check, not a timing
    contender = make_trainer(name, model, check, spec)
    got = loss_and_grads(contender, model, contender.data_collator(contender.train_dataset.to_list()))
    reference = make_trainer("ours-reference", model, check, spec)
    want = loss_and_grads(reference, model, reference.data_collator(check))
    return abs(got[0] - want[0]), max((a - b).abs().max().item() for a, b in zip(got[1], want[1]))


def attention_ops(trainer) -> list[str]:
    """The attention operators that one profiled forward of the contender's loss actually ran (SDPA's
    flash, memory-efficient or math kernel; none for eager attention, which is matmul and softmax)."""
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.no_grad(), torch.profiler.profile(activities=activities) as profile:
        trainer.compute_loss(trainer.model, batch)
    words = ("attention", "flash", "fmha", "sdp")
    return sorted({event.key for event in profile.key_averages() if any(w in event.key.lower() for w in words)})


def run_contender(name: str, rows: list[dict], spec: dict) -> dict:
    """Train `spec["steps"]` steps of `spec["batch"]` pairs per process; time the steps after the warm-up.
    Under a multi-process launch every process takes its share of each global batch."""
    dtype = getattr(torch, spec["dtype"])
    model = build_model(spec["shape"], dtype, spec["device"])
    params = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them
    global_batch = spec["batch"] * int(os.environ.get("WORLD_SIZE", "1"))
    rows = rows[: global_batch * spec["steps"]]
    trainer = make_trainer(name, model, rows, spec)
    timer = StepTimer()
    trainer.add_callback(timer)
    if spec["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = memory_mib(spec["device"], peak=False)
    trainer.train()
    peak = memory_mib(spec["device"], peak=True)
    # several processes: the largest of their peaks (each holds its shard and its own activations)
    peak, adds = trainer.accelerator.gather(torch.tensor([[peak, peak - start]], device=trainer.args.device)).amax(0)
    times, cpu_times = np.diff(np.array(timer.marks), axis=0)[spec["warmup"]:].T
    timed_rows = rows[global_batch * spec["warmup"]:]
    tokens = sum(2 * len(r["prompt_input_ids"]) + len(r["chosen_input_ids"]) + len(r["rejected_input_ids"])
                 for r in timed_rows)
    loss_diff, grad_diff = numerics(name, trainer, rows, spec)
    single = trainer.accelerator.num_processes == 1  # one process: profile one more forward
    return {"contender": name, "processes": trainer.accelerator.num_processes,
            "attention": trainer.accelerator.unwrap_model(trainer.model).config._attn_implementation,
            "attention_ops": attention_ops(trainer) if single else None,
            "step_s": statistics.median(times), "cpu_s": statistics.median(cpu_times),
            "tokens_per_s": tokens / times.sum(), "peak_mib": peak.item(), "training_adds_mib": adds.item(),
            "loss_diff": loss_diff, "grad_diff": grad_diff, "params": params, "tokens": tokens}
