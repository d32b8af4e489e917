"""Packing whole modalities into a :class:`~pairless.batch.MaskedBatch` for evaluation and generation.

Training batches come from :mod:`pairless.training.masking` (random token subsets);
evaluation and generation instead need *chosen* token sets: all tokens of the
source modalities as inputs, and all (or the not yet generated) tokens of the
destination modality as targets, plus, while generating, the already
generated destination tokens as extra inputs. :func:`pack_batch` does that
from per-modality selection masks, so that every sampler and the
cross-entropy evaluation build their batches the same way.

Conventions kept (see ``pairless/batch.py``): padding of a sequence modality
is never an input or a target (its EOS is); a sequence target's decoder input
is the previous token, the modality's BOS id at position 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from pairless.batch import MaskedBatch, TokenSpec


def content_mask(tokens: torch.Tensor, spec: TokenSpec) -> torch.Tensor:
    """(B, L) bool: the real tokens of a modality (sequences: everything but padding, EOS included)."""
    if spec.kind == "sequence" and spec.pad_id is not None:
        return tokens != spec.pad_id
    return torch.ones_like(tokens, dtype=torch.bool)


def previous_tokens(tokens: torch.Tensor, spec: TokenSpec) -> torch.Tensor:
    """(B, L) the decoder input of a sequence target: BOS then the tokens shifted right by one."""
    if spec.kind != "sequence":
        return torch.zeros_like(tokens)
    if spec.bos_id is None:
        raise ValueError(f"modality {spec.name!r}: a sequence target needs bos_id in its TokenSpec")
    bos = torch.full_like(tokens[:, :1], spec.bos_id)
    return torch.cat([bos, tokens[:, :-1]], dim=1)


def _compact(columns: dict[str, torch.Tensor], valid: torch.Tensor) -> tuple[dict[str, torch.Tensor],
                                                                             torch.Tensor]:
    """Move the valid slots of every row to the front and drop the columns no row uses (keeps >= 1)."""
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)  # valid first, in their order
    width = max(int(valid.sum(dim=1).max()) if valid.numel() else 0, 1)
    order = order[:, :width]
    packed = {name: torch.gather(column, 1, order) for name, column in columns.items()}
    return packed, torch.gather(valid, 1, order)


def _empty_side(batch_size: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    zeros = torch.zeros(batch_size, 1, dtype=torch.long)
    return {"tokens": zeros, "modality": zeros, "positions": zeros, "inputs": zeros}, zeros.bool()


def _side(
    selections: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    specs: Mapping[str, TokenSpec],
    modalities: tuple[str, ...],
    batch_size: int,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Concatenate the selected tokens of several modalities into compact slot columns."""
    if not selections:
        return _empty_side(batch_size)
    columns: dict[str, list[torch.Tensor]] = {"tokens": [], "modality": [], "positions": [], "inputs": []}
    valid = []
    for name, (tokens, selected) in selections.items():
        if name not in modalities:
            raise ValueError(f"modality {name!r} is not in the batch's modalities {modalities}")
        tokens = tokens.long()
        if tokens.shape[0] != batch_size or selected.shape != tokens.shape:
            raise ValueError(
                f"modality {name!r}: tokens {tuple(tokens.shape)} and selection {tuple(selected.shape)} "
                f"must both be (batch={batch_size}, length)"
            )
        length = tokens.shape[1]
        columns["tokens"].append(tokens)
        columns["modality"].append(torch.full_like(tokens, modalities.index(name)))
        columns["positions"].append(torch.arange(length).expand(batch_size, length))
        columns["inputs"].append(previous_tokens(tokens, specs[name]))
        valid.append(selected.bool() & content_mask(tokens, specs[name]))
    return _compact({key: torch.cat(parts, dim=1) for key, parts in columns.items()}, torch.cat(valid, dim=1))


def pack_batch(
    inputs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    targets: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    specs: Mapping[str, TokenSpec],
    modalities: tuple[str, ...],
) -> MaskedBatch:
    """Build a batch from ``{modality: (tokens (B, L), selected (B, L) bool)}`` for each side.

    Selected padding of a sequence modality is dropped. Target tokens that are
    not known yet (generation) may hold any id: only their positions matter,
    except for sequence targets, whose previous tokens are the decoder inputs.
    An empty ``inputs`` gives an encoder with no valid slot (unconditional).
    """
    sizes = {tokens.shape[0] for tokens, _ in list(inputs.values()) + list(targets.values())}
    if len(sizes) != 1:
        raise ValueError(f"pack_batch: every modality must have the same batch size, got {sorted(sizes)}")
    batch_size = sizes.pop()
    encoder, enc_valid = _side(inputs, specs, modalities, batch_size)
    decoder, dec_valid = _side(targets, specs, modalities, batch_size)
    return MaskedBatch(
        modalities=tuple(modalities),
        enc_tokens=encoder["tokens"],
        enc_modality=encoder["modality"],
        enc_positions=encoder["positions"],
        enc_valid=enc_valid,
        dec_tokens=decoder["tokens"],
        dec_input_tokens=decoder["inputs"],
        dec_modality=decoder["modality"],
        dec_positions=decoder["positions"],
        dec_valid=dec_valid,
    )


def translation_batch(
    tokens: Mapping[str, torch.Tensor],
    src: list[str],
    dst: str,
    specs: Mapping[str, TokenSpec],
    modalities: tuple[str, ...],
) -> MaskedBatch:
    """Inputs: every token of ``src`` (empty = unconditional); targets: every token of ``dst``."""
    inputs = {name: (tokens[name], torch.ones_like(tokens[name], dtype=torch.bool)) for name in src}
    targets = {dst: (tokens[dst], torch.ones_like(tokens[dst], dtype=torch.bool))}
    return pack_batch(inputs, targets, specs, modalities)
