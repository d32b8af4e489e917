"""The two data structures that cross stage boundaries after tokenization.

``TokenSpec``: what the model needs to know about one tokenized modality
(read from the token-shard manifest).

``MaskedBatch``: the packed, fixed-size model input produced by
:mod:`pairless.training.masking` (training) or built directly by evaluation and
generation. Every sample has ``Ni`` encoder slots and ``Nt`` decoder slots;
each slot names a modality (index into ``modalities``), a position inside
that modality, and a token id in that modality's own vocabulary. Slots that
carry nothing are marked invalid (``*_valid`` False) and are ignored by
attention and by the loss; masking fills budgets so that these are rare.

For a sequence modality used as a target, the targets are always a prefix
(positions 0..k-1) predicted left to right: ``dec_input_tokens`` holds the
previous token (the modality's BOS id for position 0), and decoder
self-attention is causal inside that modality. For image and vector
targets ``dec_input_tokens`` is ignored (the model uses a mask embedding).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch


@dataclass(frozen=True)
class TokenSpec:
    """One tokenized modality: kind, token count per sample, vocabulary, special ids."""

    name: str
    kind: Literal["image", "sequence", "vector"]
    num_tokens: int  # tokens per sample (sequences: the padded length)
    vocab_size: int
    pad_id: int | None = None  # sequences only
    bos_id: int | None = None  # sequences only: the decoder's start token
    eos_id: int | None = None  # sequences only
    grid: tuple[int, int] | None = None  # images: token grid (h, w), h * w == num_tokens


@dataclass
class MaskedBatch:
    """Packed encoder inputs and decoder targets for a batch (shapes in comments)."""

    modalities: tuple[str, ...]  # modality index -> name
    enc_tokens: torch.Tensor  # (B, Ni) long, token ids in each slot's modality vocab
    enc_modality: torch.Tensor  # (B, Ni) long, index into modalities
    enc_positions: torch.Tensor  # (B, Ni) long, position inside the modality
    enc_valid: torch.Tensor  # (B, Ni) bool
    dec_tokens: torch.Tensor  # (B, Nt) long, the target ids
    dec_input_tokens: torch.Tensor  # (B, Nt) long, previous token for sequence targets
    dec_modality: torch.Tensor  # (B, Nt) long
    dec_positions: torch.Tensor  # (B, Nt) long
    dec_valid: torch.Tensor  # (B, Nt) bool
    # Optional, computed on the host by :func:`pairless.training.data.with_target_rows` so that the training
    # forward needs no host sync: the flattened decoder rows ``B * Nt`` of each modality's valid targets, one
    # modality after another, each padded to a bucket; and each modality's count of them.
    target_rows: torch.Tensor | None = None  # (sum of padded counts,) long
    target_counts: tuple[int, ...] | None = None  # (M,)

    def to(self, device: torch.device | str) -> MaskedBatch:
        """The batch on ``device``; non-blocking copies (truly asynchronous from pinned memory)."""
        moved = {
            f.name: (getattr(self, f.name).to(device, non_blocking=True)
                     if isinstance(getattr(self, f.name), torch.Tensor) else getattr(self, f.name))
            for f in fields(self)
        }
        return MaskedBatch(**moved)

    def pin_memory(self) -> MaskedBatch:
        """The batch in page-locked host memory, from which copies to a GPU overlap with its work."""
        return MaskedBatch(**{f.name: (getattr(self, f.name).pin_memory()
                                       if isinstance(getattr(self, f.name), torch.Tensor)
                                       else getattr(self, f.name)) for f in fields(self)})

    @property
    def batch_size(self) -> int:
        return self.enc_tokens.shape[0]

    def num_valid_tokens(self) -> int:
        """Valid input + target tokens: what the token budget and throughput count."""
        return int(self.enc_valid.sum()) + int(self.dec_valid.sum())
