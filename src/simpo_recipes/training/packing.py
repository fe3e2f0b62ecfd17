"""Batches without padding compute: chosen and rejected packed into one row, optionally sharing the prompt.

A packed batch is rows of *spans*. A span's tokens attend causally to themselves and to an optional
prefix span: a pair's prompt + chosen is one span, its rejected response another with the prompt
as prefix, so the prompt is computed once (prefix sharing). Position ids restart per sequence.
`pair_attention` runs SDPA span by span, so attention costs Σ Lᵢ² instead of (Σ Lᵢ)² and no
[N, N] mask exists. Every scored token is listed as (flat position, target id, sequence): sequence
i < B is pair i's chosen response, B + i its rejected one, whatever the layout.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

PAIR_ATTENTION = "simpo_pair_sdpa"


def pair_attention(module, query, key, value, attention_mask, pair_spans=None, **kwargs):
    """SDPA per span of a packed batch (`pair_spans`: per row, (start, end, prefix_start, prefix_end));
    without `pair_spans` it is plain SDPA, so the model still runs ordinary padded batches."""
    if pair_spans is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rows = []
    for row, spans in enumerate(pair_spans):
        pieces, end = [], 0
        for start, end, prefix_start, prefix_end in spans:
            span = slice(start, end)
            keys, values, mask = key[row:row + 1, :, span], value[row:row + 1, :, span], None
            if prefix_end > prefix_start:  # attend to the whole prefix, then causally within the span
                prefix = slice(prefix_start, prefix_end)
                keys = torch.cat([key[row:row + 1, :, prefix], keys], dim=2)
                values = torch.cat([value[row:row + 1, :, prefix], values], dim=2)
                mask = torch.ones(end - start, keys.shape[2], dtype=torch.bool, device=query.device)
                mask = mask.tril(prefix_end - prefix_start)[None, None]
            pieces.append(sdpa_attention_forward(module, query[row:row + 1, :, span], keys, values, mask, **kwargs)[0])
        if end < query.shape[2]:  # row padding: never scored, never attended to
            pieces.append(query.new_zeros(1, query.shape[2] - end, query.shape[1], value.shape[-1]))
        rows.append(torch.cat(pieces, dim=1))
    return torch.cat(rows, dim=0), None


AttentionInterface.register(PAIR_ATTENTION, pair_attention)
AttentionMaskInterface.register(PAIR_ATTENTION, sdpa_mask)  # ordinary calls get SDPA's masks


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


def pair_attention_support(model, max_length: int) -> str | None:
    """Why `pair_attention` cannot run this model, or None when it can."""
    config = model.config.get_text_config()
    implementation = config._attn_implementation
    if implementation not in ("sdpa", PAIR_ATTENTION):
        return f"packed attention runs on SDPA and this model uses {implementation!r} attention"
    if getattr(config, "attn_logit_softcapping", None) is not None:
        return "it soft-caps attention logits, which SDPA cannot"
    window = getattr(config, "sliding_window", None)
    if window is not None and window < max_length:
        return f"its sliding window ({window}) is shorter than max_length ({max_length})"
    return None
