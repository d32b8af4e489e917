"""The last step of masking: per-slot input and target selections packed into a fixed-size MaskedBatch.

Every (modality, position) of a sample is a slot; ``assemble`` moves each row's selected input slots, in slot
order, to the first of ``input_size`` encoder slots and its target slots to the first of ``target_size``
decoder slots, with validity masks for the rest. Used by :class:`pairless.training.masking.Masker` and by
the adapter's batches (:mod:`pairless.training.adapter`).
"""

from __future__ import annotations

import torch

from pairless.batch import MaskedBatch


def _pack(selected: torch.Tensor, values: dict[str, torch.Tensor],
          size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Move the selected entries of each row (in their order) to the first slots of ``size`` slots."""
    batch = selected.shape[0]
    slot = selected.long().cumsum(1) - 1
    # Unselected entries (and overflow, which budgets rule out) go to a discarded extra column.
    slot = torch.where(selected & (slot < size), slot, torch.full_like(slot, size))
    packed = {}
    for name, value in values.items():
        out = torch.zeros(batch, size + 1, dtype=value.dtype)
        out.scatter_(1, slot, value.expand(batch, -1) if value.shape[0] == 1 else value)
        packed[name] = out[:, :size]
    valid = torch.zeros(batch, size + 1, dtype=torch.bool)
    valid.scatter_(1, slot, selected)
    return packed, valid[:, :size]


def assemble(modalities, slot_modality, slot_position, is_input, is_target, values, previous,
             input_size: int, target_size: int, input_values: torch.Tensor | None = None) -> MaskedBatch:
    """Pack per-slot selections ``(B, T)`` over all (modality, position) slots into a MaskedBatch.
    ``input_values``: the encoder's ids where they differ from the decoder's ``values`` (span masking)."""
    common = {"modality": slot_modality.unsqueeze(0), "position": slot_position.unsqueeze(0)}
    encoder_values = values if input_values is None else input_values
    encoder, enc_valid = _pack(is_input, {**common, "token": encoder_values}, input_size)
    decoder, dec_valid = _pack(is_target, {**common, "token": values, "previous": previous}, target_size)
    return MaskedBatch(
        modalities=tuple(modalities),
        enc_tokens=encoder["token"], enc_modality=encoder["modality"], enc_positions=encoder["position"],
        enc_valid=enc_valid,
        dec_tokens=decoder["token"], dec_input_tokens=decoder["previous"], dec_modality=decoder["modality"],
        dec_positions=decoder["position"], dec_valid=dec_valid,
    )
