"""What users look at when a preference run collapses or starts repeating itself, as trainer callbacks.

- LogProbTrendCallback: from the logged `logps/chosen` and `logps/rejected` (mean token log-prob ℓ),
  logs how far each has moved since the first log, and warns once when the chosen responses' ℓ has
  fallen by more than a threshold (likelihood displacement: both responses pushed down, the margin
  kept by pushing the rejected one further).
- StartKLCallback (optional, `kl_eval_prompts`): at each evaluation, KL(π_θ ‖ π_start) on answers the
  policy samples for held-out prompts, as the paper's KL trajectories.
"""
from __future__ import annotations

import logging

import torch
from transformers import TrainerCallback

logger = logging.getLogger("simpo_recipes")


class LogProbTrendCallback(TrainerCallback):
    """Adds `logps/chosen_change` and `logps/rejected_change` (ℓ now − ℓ at the first log, nats per
    token) to every training log that has the log-probs; put it before the callbacks that write logs."""

    def __init__(self, drop_warning: float | None, learning_rate: float) -> None:
        self.drop_warning, self.learning_rate = drop_warning, learning_rate
        self.start: dict[str, float] = {}
        self.warned = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "logps/chosen" not in logs:
            return
        for name in ("chosen", "rejected"):
            key = f"logps/{name}"
            if key in logs:
                self.start.setdefault(key, logs[key])
                logs[f"{key}_change"] = logs[key] - self.start[key]
        drop = -logs["logps/chosen_change"]
        if self.drop_warning is not None and drop > self.drop_warning and not self.warned:
            self.warned = True
            logger.warning(
                "likelihood displacement at step %d: the chosen responses' mean log-prob fell %.3g nats/token "
                "since the start (%.3g -> %.3g; rejected %+.3g), more than likelihood_drop_warning = %g. The "
                "usual cause is a learning rate too high for this model (learning_rate = %g; the paper searched "
                "3e-7 to 1e-6); sft_weight > 0 also holds the chosen likelihood up.", state.global_step, drop,
                self.start["logps/chosen"], logs["logps/chosen"], logs.get("logps/rejected_change", float("nan")),
                self.drop_warning, self.learning_rate)


def _left_padded(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq):] = torch.tensor(seq, device=device)
        mask[i, width - len(seq):] = 1
    return ids, mask


def answer_kl(policy, reference, prompt: list[int], answer: list[int]) -> float:
    """Σ over the answer's tokens of KL(π_θ(·|x, y<t) ‖ π_ref(·|x, y<t)), one unpadded sequence (the
    plain reference the batched path is tested against)."""
    ids = torch.tensor([prompt + answer], device=next(policy.parameters()).device)
    scored = slice(len(prompt) - 1, len(prompt) + len(answer) - 1)
    log_p = torch.log_softmax(policy(input_ids=ids).logits[0, scored].float(), -1)
    log_q = torch.log_softmax(reference(input_ids=ids).logits[0, scored].float(), -1)
    return (log_p.exp() * (log_p - log_q)).sum().item()


@torch.no_grad()
def sampled_kl(policy, reference, prompts: list[list[int]], stop_ids: list[int], pad_id: int,
               max_new_tokens: int, seed: int, batch_size: int = 8) -> tuple[float, float, list[list[int]]]:
    """(mean KL per answer, per answer token, the answers) of answers sampled from `policy` (temperature 1,
    no truncation) to `prompts`: the exact KL of each next-token distribution, summed along the sampled
    answer, is an unbiased, low-variance estimate of KL(π_θ(·|x) ‖ π_ref(·|x))."""
    device = next(policy.parameters()).device
    totals, tokens, answers = [], 0, []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            ids, mask = _left_padded(batch, pad_id, device)
            out = policy.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                                  top_k=0, max_new_tokens=max_new_tokens, eos_token_id=stop_ids,
                                  pad_token_id=pad_id)
            new = out[:, ids.shape[1]:].tolist()
            for row in new:  # up to and including the first stop token
                end = next((i + 1 for i, t in enumerate(row) if t in stop_ids), len(row))
                answers.append(row[:end])
            batch_answers = answers[-len(batch):]
            ids, mask = _left_padded([p + a for p, a in zip(batch, batch_answers)], pad_id, device)
            # left padding: the answers end every row, so only the last `keep` positions need logits
            keep = max(map(len, batch_answers)) + 1
            inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
                      "logits_to_keep": keep}
            log_p = torch.log_softmax(policy(**inputs).logits.float(), -1)
            log_q = torch.log_softmax(reference(**inputs).logits.float(), -1)
            per_position = (log_p.exp() * (log_p - log_q)).sum(-1)  # [B, keep]: position j predicts j + 1
            for i, answer in enumerate(batch_answers):
                totals.append(per_position[i, keep - len(answer) - 1:keep - 1].sum().item())
                tokens += len(answer)
    return sum(totals) / len(totals), sum(totals) / max(tokens, 1), answers


class StartKLCallback(TrainerCallback):
    """At each evaluation: KL to the starting model on answers sampled for held-out prompts, logged as
    `eval_kl_to_start` (nats per answer) and `eval_kl_to_start_per_token`. The starting model is
    loaded once, at the first evaluation, beside the policy (one more copy of the weights)."""

    def __init__(self, trainer, start_model: str, prompts: list[list[int]], max_new_tokens: int) -> None:
        self.trainer, self.start_model, self.prompts = trainer, start_model, prompts
        self.max_new_tokens, self.reference = max_new_tokens, None

    def on_evaluate(self, args, state, control, **kwargs):
        from transformers import AutoModelForCausalLM
        from transformers.integrations import is_deepspeed_zero3_enabled

        policy = self.trainer.accelerator.unwrap_model(self.trainer.model)
        if is_deepspeed_zero3_enabled():  # sharded weights: generation would need every rank in step
            logger.warning("kl_eval_prompts: not measured under DeepSpeed ZeRO-3 (use ZeRO-2 or DDP for KL)")
            return
        if self.reference is None:
            dtype = next(policy.parameters()).dtype
            self.reference = AutoModelForCausalLM.from_pretrained(self.start_model, dtype=dtype).to(policy.device)
            self.reference.eval()
        config = policy.generation_config
        stop = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
        pad = config.pad_token_id if config.pad_token_id is not None else stop[0]
        was_training = policy.training
        policy.eval()
        per_answer, per_token, _ = sampled_kl(policy, self.reference, self.prompts, stop, pad, self.max_new_tokens,
                                              seed=args.seed + state.global_step)
        policy.train(was_training)
        self.trainer.log({"eval_kl_to_start": per_answer, "eval_kl_to_start_per_token": per_token})


def add_kl_eval(trainer, start_model: str, eval_dataset, prompts: int, max_new_tokens: int) -> None:
    """StartKLCallback on the first `prompts` held-out prompts, when asked for and when there is an eval."""
    if not prompts:
        return
    if eval_dataset is None or trainer.args.eval_strategy == "no":
        logger.warning("kl_eval_prompts = %d, but this run never evaluates (no test split or eval_strategy no): "
                       "KL to the starting model is not measured", prompts)
        return
    chosen = eval_dataset.select(range(min(prompts, len(eval_dataset))))["prompt_input_ids"]
    trainer.add_callback(StartKLCallback(trainer, start_model, chosen, max_new_tokens))
