"""The ml-4m fixture (tests/fixtures/ml4m/, written by scripts/make_ml4m_fixture.py) read as pairless batches.

Each case holds ml-4m's input dict for 3 samples (per modality: token tensor, input/target masks that are
True where a token is *not* used, decoder attention mask) with one target modality, and ml-4m's logits for
that modality: its valid decoder slots first, in token order. :func:`case_batch` packs the same inputs and
targets into a :class:`MaskedBatch` for a model whose modalities carry pairless names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from pairless.batch import MaskedBatch

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ml4m"
SEQUENCE_SHIFT = 3


def fixture_record() -> dict:
    return json.loads((FIXTURE / "fixture.json").read_text(encoding="utf-8"))


def load_cases() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "cases.safetensors"))


def case_batch(cases: dict, flavour: str, case: dict, names: dict[str, str], modalities: tuple[str, ...],
               offset: int) -> tuple[MaskedBatch, list[int]]:
    """The MaskedBatch of one case and the number of valid decoder slots of each sample.

    ``names``: ml-4m name -> pairless name; ``offset``: where a target sequence starts in its tensor.
    Encoder and decoder slots are padded beyond the longest sample (padding must change nothing).
    """
    target = case["target"]
    prefix = f"{flavour}/{target}"
    fields = {}
    for key, tensor in cases.items():
        if key.startswith(f"{prefix}/") and key != f"{prefix}/logits":
            _, _, modality, field = key.split("/")
            fields.setdefault(modality, {})[field] = tensor
    encoder = [[] for _ in range(3)]
    decoder = [[] for _ in range(3)]
    for ml4m_name, entry in fields.items():
        index = modalities.index(names[ml4m_name])
        tensor = entry["tensor"].long()
        is_sequence = entry["decoder_attention_mask"].max() <= 1 and ml4m_name in ("caption", "det")
        for row in range(3):
            for position in (~entry["input_mask"][row]).nonzero().flatten().tolist():
                # a sequence's input tokens at later positions than ml-4m numbers them (as pairless's masker
                # hands them over): an ml-4m-style model ranks them 0, 1, ... again
                where = position + SEQUENCE_SHIFT if is_sequence else position
                encoder[row].append((int(tensor[row, position]), index, where))
            if ml4m_name != target:
                continue
            chosen = (~entry["target_mask"][row]).nonzero().flatten().tolist()
            if is_sequence:  # slot j reads token j of the target sequence and predicts token j + 1
                for slot in range(len(chosen) - 1):
                    decoder[row].append((int(tensor[row, offset + slot + 1]), int(tensor[row, offset + slot]),
                                         index, slot))
            else:
                decoder[row].extend((int(tensor[row, position]), 0, index, position) for position in chosen)
    width_in = max(len(slots) for slots in encoder) + 2
    width_out = max(len(slots) for slots in decoder) + 2

    def pack(rows, width, size):
        values = torch.zeros(3, width, size, dtype=torch.long)
        valid = torch.zeros(3, width, dtype=torch.bool)
        for row, slots in enumerate(rows):
            if slots:
                values[row, :len(slots)] = torch.tensor(slots, dtype=torch.long)
                valid[row, :len(slots)] = True
        return values, valid

    enc, enc_valid = pack(encoder, width_in, 3)
    dec, dec_valid = pack(decoder, width_out, 4)
    batch = MaskedBatch(modalities=modalities, enc_tokens=enc[..., 0], enc_modality=enc[..., 1],
                        enc_positions=enc[..., 2], enc_valid=enc_valid, dec_tokens=dec[..., 0],
                        dec_input_tokens=dec[..., 1], dec_modality=dec[..., 2], dec_positions=dec[..., 3],
                        dec_valid=dec_valid)
    return batch, [len(slots) for slots in decoder]


def max_logit_difference(model, cases: dict, flavour: str, case: dict, names: dict[str, str],
                         offset: int) -> float:
    """Max |pairless logit - ml-4m logit| over the valid decoder slots of one case (fp32)."""
    batch, counts = case_batch(cases, flavour, case, names, model.modalities, offset)
    reference = cases[f"{flavour}/{case['target']}/logits"]
    with torch.no_grad():
        ours = model.eval().logits(batch)[..., :reference.shape[-1]]
    worst = 0.0
    for row, count in enumerate(counts):
        if count:
            difference = (ours[row, :count] - reference[row, :count]).abs().nan_to_num(nan=float("inf"))
            worst = max(worst, float(difference.max()))
    return worst
