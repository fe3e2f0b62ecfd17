"""Preference rows -> batches: padded (the reference layout) or packed (`packing.pack_pairs`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from simpo_recipes.data.preprocess import KL_COLUMNS
from simpo_recipes.training.packing import pack_pairs

# Reference log-prob sums, one per row, written by the cached reference pass (`reference.py`).
REFERENCE_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps", "ref_kl_chosen_logps", "ref_kl_rejected_logps")


@dataclass
class PairCollator:
    """B preference rows -> one batch. Padded (the reference): prompt+chosen and prompt+rejected right-
    padded into [2B, T] (chosen first), labels −100 off the response. padding_free / prefix_sharing:
    the packed layouts of `packing.pack_pairs`. Every layout lists its scored tokens. Rows with KL
    columns add the same layout of their mismatched sequences under "kl"; reference columns pass
    through as [B] tensors."""

    pad_token_id: int
    padding_free: bool = False
    prefix_sharing: bool = False

    def __call__(self, rows: list[dict]) -> dict:
        # first key: one entry per pair, so that Trainer counts pairs (find_batch_size) when it weights eval losses
        batch = {"pairs": torch.arange(len(rows))} | self._layout(rows)
        if KL_COLUMNS[0] in rows[0]:
            batch["kl"] = self._layout([{"prompt_input_ids": row["prompt_input_ids"],
                                         "chosen_input_ids": row["kl_chosen_input_ids"],
                                         "rejected_input_ids": row["kl_rejected_input_ids"]} for row in rows])
        for column in REFERENCE_COLUMNS:
            if column in rows[0]:
                batch[column] = torch.tensor([row[column] for row in rows], dtype=torch.float32)
        return batch

    def _layout(self, rows: list[dict]) -> dict:
        batch = pack_pairs(rows, self.pad_token_id, self.padding_free, self.prefix_sharing)
        if self.padding_free or self.prefix_sharing:
            return batch
        del batch["position_ids"], batch["pair_spans"]
        labels = torch.full_like(batch["input_ids"], -100)
        labels.view(-1)[batch["score_index"] + 1] = batch["score_target"]  # padded: token t is scored at t − 1
        return batch | {"labels": labels}
