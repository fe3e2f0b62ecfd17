"""Batches without padding compute: chosen and rejected packed into one row, optionally sharing the prompt.

A packed batch is rows of *spans*. A span's tokens attend causally to themselves and to an optional
prefix span: a pair's prompt + chosen is one span, its rejected response another with the prompt
as prefix, so the prompt is computed once (prefix sharing). Position ids restart per sequence.
The packed attention runs the model's own attention span by span — SDPA, or the model's eager
function for models on eager attention (Gemma-2, whose soft cap SDPA cannot apply) — so attention
costs Σ Lᵢ² instead of (Σ Lᵢ)² and no [N, N] mask reaches it; a layer's sliding window is applied
within each span's mask. Every scored token is listed as (flat position, target id, sequence):
sequence i < B is pair i's chosen response, B + i its rejected one, whatever the layout.
"""
from __future__ import annotations

import sys

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

PAIR_SDPA, PAIR_EAGER = "simpo_pair_sdpa", "simpo_pair_eager"


def _model_eager_attention(module):
    """The eager attention of the modeling file that defines `module` (Gemma-2's applies its soft cap)."""
    return getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)


def _span_mask(span: int, prefix: int, window: int | None, device) -> torch.Tensor:
    """[span, prefix + span] True where a span token may attend: the whole prefix, then causally, and
    only the last `window` positions (a sliding-window layer; positions continue the prefix's)."""
    query = torch.arange(prefix, prefix + span, device=device)[:, None]
    key = torch.arange(prefix + span, device=device)[None]
    allowed = key <= query
    if window is not None:
        allowed &= key > query - window
    return allowed


def _span_attention(attention, additive: bool, module, query, key, value, attention_mask, pair_spans=None,
                    sliding_window=None, **kwargs):
    """`attention` per span of a packed batch (`pair_spans`: per row, (start, end, prefix_start, prefix_end)),
    with a boolean mask (SDPA) or an additive float one (eager); without `pair_spans` it is `attention`
    itself, so the model still runs ordinary padded batches."""
    if pair_spans is None:
        return attention(module, query, key, value, attention_mask, sliding_window=sliding_window, **kwargs)
    rows = []
    for row, spans in enumerate(pair_spans):
        pieces, end = [], 0
        for start, end, prefix_start, prefix_end in spans:
            span = slice(start, end)
            keys, values = key[row:row + 1, :, span], value[row:row + 1, :, span]
            if prefix_end > prefix_start:  # attend to the whole prefix, then causally within the span
                prefix = slice(prefix_start, prefix_end)
                keys = torch.cat([key[row:row + 1, :, prefix], keys], dim=2)
                values = torch.cat([value[row:row + 1, :, prefix], values], dim=2)
            mask = None  # SDPA without a mask runs causally (and may use its flash kernel)
            windowed = sliding_window is not None and sliding_window < end - start
            if additive or keys.shape[2] > end - start or windowed:
                mask = _span_mask(end - start, keys.shape[2] - (end - start), sliding_window, query.device)
                if additive:  # eager attention adds its mask: 0 where allowed, the dtype's minimum elsewhere
                    mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill_(
                        ~mask, torch.finfo(query.dtype).min)
                mask = mask[None, None]
            pieces.append(attention(module, query[row:row + 1, :, span], keys, values, mask, **kwargs)[0])
        if end < query.shape[2]:  # row padding: never scored, never attended to
            pieces.append(query.new_zeros(1, query.shape[2] - end, query.shape[1], value.shape[-1]))
        rows.append(torch.cat(pieces, dim=1))
    return torch.cat(rows, dim=0), None


def pair_sdpa(module, query, key, value, attention_mask, **kwargs):
    return _span_attention(sdpa_attention_forward, False, module, query, key, value, attention_mask, **kwargs)


def pair_eager(module, query, key, value, attention_mask, **kwargs):
    return _span_attention(_model_eager_attention(module), True, module, query, key, value, attention_mask,
                           **kwargs)


AttentionInterface.register(PAIR_SDPA, pair_sdpa)
AttentionInterface.register(PAIR_EAGER, pair_eager)
AttentionMaskInterface.register(PAIR_SDPA, sdpa_mask)  # ordinary calls get the masks of what they wrap
AttentionMaskInterface.register(PAIR_EAGER, eager_mask)


def pack_pairs(rows: list[dict], pad_token_id: int, padding_free: bool, prefix_sharing: bool) -> dict:
    """Packed batch of B pairs: one row of all pairs (padding_free) or one row per pair / sequence,
    each pair's prompt once (prefix_sharing) or repeated before each response."""
    n_pairs = len(rows)
    units = []  # (tokens, spans relative to the unit, scored tokens as (position, target, sequence))
    for i, row in enumerate(rows):
        prompt, chosen, rejected = row["prompt_input_ids"], row["chosen_input_ids"], row["rejected_input_ids"]
        p = len(prompt)
        if prefix_sharing:
            c = len(chosen)
            units.append((prompt + chosen + rejected, [(0, p + c, 0, 0), (p + c, p + c + len(rejected), 0, p)],
                          _scored(p - 1, p, chosen, i) + _scored(p - 1, p + c, rejected, n_pairs + i)))
        else:
            for response, seq in ((chosen, i), (rejected, n_pairs + i)):
                units.append((prompt + response, [(0, p + len(response), 0, 0)], _scored(p - 1, p, response, seq)))
    if not prefix_sharing:  # chosen sequences first, as in the padded batch
        units = units[0::2] + units[1::2]
    groups = [units] if padding_free else [[unit] for unit in units]
    width = max(sum(len(u[0]) for u in group) for group in groups)
    input_ids, position_ids, attention_mask, spans, index, target, sequence = [], [], [], [], [], [], []
    for r, group in enumerate(groups):
        ids, pos, row_spans, offset = [], [], [], 0
        for tokens, unit_spans, scored in group:
            for start, end, p0, p1 in unit_spans:
                prefix = (offset + p0, offset + p1) if p1 > p0 else (0, 0)
                row_spans.append((offset + start, offset + end, *prefix))
                pos.extend(range(p1 - p0, p1 - p0 + end - start))  # a response continues its prompt's positions
            for position, tok, seq in scored:
                index.append(r * width + offset + position)
                target.append(tok)
                sequence.append(seq)
            ids += tokens
            offset += len(tokens)
        input_ids.append(ids + [pad_token_id] * (width - offset))
        position_ids.append(pos + [0] * (width - offset))
        attention_mask.append([1] * offset + [0] * (width - offset))
        spans.append(row_spans)
    return {
        "input_ids": torch.tensor(input_ids), "position_ids": torch.tensor(position_ids),
        "attention_mask": torch.tensor(attention_mask),
        "pair_spans": spans, "pair_count": n_pairs,  # plain Python: the attention loops over them
        "score_index": torch.tensor(index), "score_target": torch.tensor(target),
        "score_sequence": torch.tensor(sequence),
    }


def _scored(context_end: int, start: int, response: list[int], sequence: int) -> list[tuple[int, int, int]]:
    """Response token j is predicted at the position before it; the first one at the prompt's last token."""
    return [(context_end if j == 0 else start + j - 1, tok, sequence) for j, tok in enumerate(response)]


def pair_attention_for(model) -> tuple[str | None, str | None]:
    """(The packed attention that runs this model, None), or (None, why packed batches cannot run it)."""
    implementation = model.config.get_text_config()._attn_implementation
    if implementation in ("sdpa", PAIR_SDPA):
        return PAIR_SDPA, None
    if implementation in ("eager", PAIR_EAGER):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: the wrapped model
        if _model_eager_attention(base) is None:
            return None, f"{type(base).__name__}'s modeling file has no eager_attention_forward to run span by span"
        return PAIR_EAGER, None
    return None, f"packed attention runs span by span on SDPA or eager attention; this model uses {implementation!r}"
