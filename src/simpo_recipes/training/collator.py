"""Preference rows -> batches: padded (the reference layout) or packed (`packing.pack_pairs`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from simpo_recipes.training.packing import pack_pairs


@dataclass
class PairCollator:
    """B preference rows -> one batch. Padded (the reference): prompt+chosen and prompt+rejected right-
    padded into [2B, T] (chosen first), labels −100 off the response. padding_free / prefix_sharing:
    the packed layouts of `packing.pack_pairs`. Every layout lists its scored tokens."""

    pad_token_id: int
    padding_free: bool = False
    prefix_sharing: bool = False

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = pack_pairs(rows, self.pad_token_id, self.padding_free, self.prefix_sharing)
        if self.padding_free or self.prefix_sharing:
            return batch
        del batch["position_ids"], batch["pair_spans"]
        labels = torch.full_like(batch["input_ids"], -100)
        labels.view(-1)[batch["score_index"] + 1] = batch["score_target"]  # padded: token t is scored at t − 1
        return batch | {"labels": labels}
