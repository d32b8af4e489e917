"""A second, independent construction of a whole-modality translation batch: the oracle the tests
compare the model's and the evaluation's batches against (built on the training masker's packing)."""

from __future__ import annotations

import torch

from pairless.batch import MaskedBatch, TokenSpec
from pairless.training.packing import assemble


def full_translation_batch(tokens: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None,
                           src: list[str], dst: str, specs: dict[str, TokenSpec],
                           modalities: tuple[str, ...] | None = None) -> MaskedBatch:
    """Inputs: every non-pad token of the ``src`` modalities; targets: every token of ``dst``.

    Sequences count their non-pad tokens including EOS. Samples lacking a
    source contribute nothing for it; samples lacking ``dst`` have no valid
    target. ``Ni``/``Nt`` are the largest counts in the batch. An empty
    ``src`` gives the unconditional batch (only the model's null token).
    """
    modalities = tuple(modalities) if modalities is not None else tuple(specs)
    for name in [*src, dst]:
        if name not in modalities:
            raise ValueError(f"modality {name!r} is not one of the model's: {', '.join(modalities)}")
    if dst in src:
        raise ValueError(f"dst {dst!r} is also a source; a translation batch needs them disjoint")
    batch = tokens[dst].shape[0]
    is_input, is_target, values, previous, slot_modality, slot_position = [], [], [], [], [], []
    for index, name in enumerate(modalities):
        if name not in src and name != dst:
            continue
        spec = specs[name]
        token = tokens[name].long()
        has = present[name].bool().unsqueeze(1) if present is not None and name in present \
            else torch.ones(batch, 1, dtype=torch.bool)
        real = (token != spec.pad_id) & has if spec.kind == "sequence" else has.expand(batch, spec.num_tokens)
        is_input.append(real if name in src else torch.zeros_like(real))
        is_target.append(real if name == dst else torch.zeros_like(real))
        values.append(token)
        if spec.kind == "sequence":
            previous.append(torch.cat([torch.full((batch, 1), spec.bos_id, dtype=torch.long), token[:, :-1]],
                                      1))
        else:
            previous.append(torch.zeros_like(token))
        slot_modality.append(torch.full((spec.num_tokens,), index, dtype=torch.long))
        slot_position.append(torch.arange(spec.num_tokens))
    is_input, is_target = torch.cat(is_input, 1), torch.cat(is_target, 1)
    return assemble(modalities, torch.cat(slot_modality), torch.cat(slot_position), is_input, is_target,
                    torch.cat(values, 1), torch.cat(previous, 1),
                    int(is_input.sum(1).max()), int(is_target.sum(1).max()))
