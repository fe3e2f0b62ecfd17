"""Response log-probs from the LM head in chunks of scored positions, never the [2B, T, V] logits.

The body's last hidden states are taken from the model's own forward (so DDP and gradient
checkpointing see an ordinary call) with `logits_to_keep=1`; only the scored positions go through
the head, `chunk_size` at a time, with the log-softmax in fp32. The backward recomputes each chunk's
logits and accumulates the weight gradient chunk by chunk. The chunked computation runs as the head
module's own call, so the hooks on that module run as for its ordinary forward: DeepSpeed ZeRO-3
gathers the sharded weight for the forward and again for the backward, and reduces its gradient.
TRL's `ChunkedLogProbFunction` does the same job but folds each tile in ~10 elementwise passes on
CPU: 2× slower than full logits here (one thread, 1024 tokens, vocabulary 128k), where this one is
as fast as they are.
"""
from __future__ import annotations

import inspect

import torch


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None):
    """fp32 logits of one chunk (the model's dtype for the matmul, like its own head), and tanh(y/cap)."""
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    if softcap is None:
        return logits, None
    squashed = torch.tanh(logits / softcap)  # Gemma-2's final logit soft-capping
    return squashed * softcap, squashed


class ChunkedHeadLogps(torch.autograd.Function):
    """log p(targets | hidden) for hidden [M, H] through the head (weight [V, H], bias [V] or None)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size: int, softcap: float | None):
        logps = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        log_norm = torch.empty_like(logps)
        for start in range(0, hidden.shape[0], chunk_size):
            chunk = slice(start, start + chunk_size)
            logits, _ = _logits(hidden[chunk], weight, bias, softcap)
            target_logits = logits.gather(-1, targets[chunk, None]).squeeze(-1)
            top = logits.amax(-1, keepdim=True)  # logsumexp in place: no second [chunk, V] buffer
            log_norm[chunk] = logits.sub_(top).exp_().sum(-1).log_() + top.squeeze(-1)
            logps[chunk] = target_logits - log_norm[chunk]
        ctx.save_for_backward(hidden, weight, bias, targets, log_norm)
        ctx.chunk_size, ctx.softcap = chunk_size, softcap
        return logps

    @staticmethod
    def backward(ctx, grad_logps):
        hidden, weight, bias, targets, log_norm = ctx.saved_tensors
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if needs_weight else None
        grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if needs_bias else None
        grad_logps = grad_logps.float()
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            chunk = slice(start, start + ctx.chunk_size)
            logits, squashed = _logits(hidden[chunk], weight, bias, ctx.softcap)
            # d log p(t) / d logit = onehot(t) − softmax, scaled by the incoming gradient, in place
            grad = logits.sub_(log_norm[chunk, None]).exp_().mul_(-grad_logps[chunk, None])
            grad.scatter_add_(1, targets[chunk, None], grad_logps[chunk, None])
            if squashed is not None:
                grad.mul_(1 - squashed * squashed)
            if grad_hidden is not None:
                grad_hidden[chunk] = grad.to(weight.dtype) @ weight
            if grad_weight is not None:
                grad_weight.addmm_(grad.t(), hidden[chunk].float())  # fp32 accumulation over chunks
            if grad_bias is not None:
                grad_bias += grad.sum(0)
        return (grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype),
                None if grad_bias is None else grad_bias.to(bias.dtype), None, None, None)


def chunked_head_support(model) -> str | None:
    """Why the chunked head cannot replace this model's own head, or None when it can."""
    config = model.config.get_text_config()
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        return f"its output head is {type(head).__name__}, not a Linear layer"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: the wrapped model
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return "its forward has no logits_to_keep argument"
    scaled = [k for k in ("logit_scale", "logits_scaling", "output_multiplier", "lm_head_multiplier")
              if getattr(config, k, None) not in (None, 1, 1.0)]
    if scaled:
        return f"it scales its logits ({scaled[0]})"
    return None


class ChunkedHead:
    """The chunked head of one model: its body, head weights and final soft-cap, looked up once."""

    def __init__(self, model, chunk_size: int) -> None:
        self.body, self.head, self.chunk_size = model.get_decoder(), model.get_output_embeddings(), chunk_size
        self.softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)

    def logps(self, model, model_inputs: dict, score_index: torch.Tensor, score_target: torch.Tensor):
        """Log-probs of the tokens `score_target`, predicted at the flat positions `score_index`.

        `model` (wrapped or not) runs with logits_to_keep=1 while a hook on the body keeps its output."""
        captured = []
        handle = self.body.register_forward_hook(lambda module, args, output: captured.append(output[0]))
        try:
            model(**model_inputs, logits_to_keep=1)
        finally:
            handle.remove()
        return self._head_call(captured[-1].flatten(0, 1)[score_index], score_target)

    def _head_call(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """ChunkedHeadLogps as the head's forward for one call of the head module, whose hooks (ZeRO-3's
        gathering and gradient reduction) thus run around it; any forward set on the instance is put back."""
        head = self.head
        own_forward = vars(head).pop("forward", None)  # e.g. accelerate's device hooks wrap it per instance
        head.forward = lambda hidden, targets: ChunkedHeadLogps.apply(hidden, head.weight, head.bias, targets,
                                                                      self.chunk_size, self.softcap)
        try:
            return head(hidden, targets)
        finally:
            del head.forward
            if own_forward is not None:
                head.forward = own_forward
