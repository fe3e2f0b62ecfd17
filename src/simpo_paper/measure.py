"""What `make paper` measures beyond the demo's evaluation: how a model's mean token log-prob of its own
answers follows their length (the paper's Spearman 0.82 without length normalisation, 0.34 with), and
SimPO's and DPO's step time and peak memory (`python -m simpo_paper.measure efficiency ...`: one
process per contender, so that each peak is its own)."""
from __future__ import annotations

import itertools
import json
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import torch
from transformers import TrainerCallback


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i:j + 1]:
            out[k] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's ρ (Pearson's r of the ranks); None when either side is constant (ρ undefined)."""
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if vx == 0 or vy == 0 else cov / (vx * vy) ** 0.5


@torch.no_grad()
def answer_logps(model_path: str | Path, rows: list[dict], batch_size: int = 64) -> list[tuple[float, int]]:
    """(Σ log π(y|x), |y|) of each row's `output` as the answer to its `instruction`, under the model at
    `model_path`: tokenized and scored as the trainer scores a response (end of turn included)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from simpo_recipes.data.chat import encode_response
    from simpo_recipes.training.collator import PairCollator
    from simpo_recipes.training.logps import SequenceScorer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    scorer = SequenceScorer(model, 0, False, False, model.config.max_position_embeddings)
    collate = PairCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    encoded = []
    for row in rows:
        prompt = [{"role": "user", "content": row["instruction"]}]
        prompt_ids, answer_ids = encode_response(tokenizer, prompt, {"role": "assistant", "content": row["output"]})
        # a pair of the answer with itself: the collator's layout, whose chosen half is the answer
        encoded.append({"prompt_input_ids": prompt_ids, "chosen_input_ids": answer_ids, "rejected_input_ids": answer_ids})
    out = []
    for start in range(0, len(encoded), batch_size):
        part = encoded[start:start + batch_size]
        sums, counts = scorer(model, collate(part))
        out += list(zip(sums[:len(part)].tolist(), counts[:len(part)].tolist()))
    return out


def length_vs_logprob(model_path: str | Path, generations: list[dict]) -> dict:
    """Each answer's length (tokens, end of turn included) and mean token log-prob under its own model,
    and Spearman's ρ between the two."""
    scored = answer_logps(model_path, generations)
    lengths = [n for _, n in scored]
    means = [s / max(n, 1) for s, n in scored]
    return {"spearman": spearman(lengths, means), "lengths": lengths, "mean_logps": means}


class PeakMemory(TrainerCallback):
    """Peak RSS of this process while it trains, sampled every millisecond from a thread, minus the RSS
    at the start of training: what training adds (model copies, activations, gradients, optimizer)."""

    def on_train_begin(self, args, state, control, **kwargs):
        process = psutil.Process()
        self.start = self.peak = process.memory_info().rss
        self.running = True

        def sample():
            while self.running:
                self.peak = max(self.peak, process.memory_info().rss)
                time.sleep(0.001)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()

    def on_train_end(self, args, state, control, **kwargs):
        self.running = False
        self.thread.join()


def efficiency_run(argv: list[str]) -> dict:
    """Run one preference stage (argv as run_preference_stage's) in this process: the median wall and CPU
    time of a training step (the bench's StepTimer; CPU time moves less on a shared machine), the whole stage's
    time (with the reference pass where there is one), the RSS training adds and the process's peak."""
    from simpo_bench.contenders import StepTimer
    from simpo_recipes.training.preference_stage import run_preference_stage

    timer, memory = StepTimer(), PeakMemory()
    start = time.monotonic()
    trainer = run_preference_stage(argv, callbacks=(timer, memory))
    stage_seconds = time.monotonic() - start
    marks = timer.marks[1:]  # from the end of step 1: no warm-up
    # the median step: a burst of other work on a shared machine moves a mean, not a median
    wall, cpu = (statistics.median(b[i] - a[i] for a, b in itertools.pairwise(marks)) for i in (0, 1))
    return {"steps": trainer.state.global_step, "parameters": trainer.model.num_parameters(),
            "step_s": wall, "cpu_step_s": cpu,
            "stage_s": stage_seconds, "training_adds_mib": (memory.peak - memory.start) / 2**20,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # Linux: KiB


def main() -> None:
    """`python -m simpo_paper.measure efficiency CONFIG.yaml --key=value ...`: one JSON line on stdout's last line."""
    if sys.argv[1:2] != ["efficiency"]:
        sys.exit("usage: python -m simpo_paper.measure efficiency CONFIG.yaml [--key=value ...]")
    print(json.dumps(efficiency_run(sys.argv[2:])), flush=True)


if __name__ == "__main__":
    main()
