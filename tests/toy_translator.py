"""A tiny stand-in for ``pairless.model.FourM`` used by the evaluation and generation tests.

It keeps the model's contract (``encode``, ``decode``, ``logits``,
``start_cache``/``decode_step``; logits are -inf beyond a slot's vocabulary;
sequence targets see their previous tokens causally) with one attention
layer, so that tests can check samplers and cross-entropy against known or
hand-computed outputs in milliseconds. ``FixedLogits`` returns logits given
outright, for exact cross-entropy checks.
"""

from __future__ import annotations

import torch
from torch import nn

from pairless.batch import MaskedBatch, TokenSpec


def toy_specs() -> dict[str, TokenSpec]:
    return {
        "rgb": TokenSpec("rgb", "image", num_tokens=16, vocab_size=32, grid=(4, 4)),
        "depth": TokenSpec("depth", "image", num_tokens=16, vocab_size=24, grid=(4, 4)),
        "caption": TokenSpec("caption", "sequence", num_tokens=10, vocab_size=40, pad_id=0, bos_id=1,
                             eos_id=2),
    }


class ToyTranslator(nn.Module):
    """Embeddings + one cross-attention + a causal running mean for sequence targets."""

    def __init__(self, specs: dict[str, TokenSpec], dim: int = 32, seed: int = 0, scale: float = 1.0,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.specs = dict(specs)
        self.names = tuple(specs)
        self.vocab_max = max(spec.vocab_size for spec in specs.values())
        length = max(spec.num_tokens for spec in specs.values())

        def weight(*shape):
            # float64 by default: autocast leaves it alone, so cached and uncached decoding agree exactly
            return nn.Parameter((torch.randn(*shape, generator=generator) * scale).to(dtype))

        self.token_embedding = weight(len(specs), self.vocab_max, dim)
        self.position_embedding = weight(length, dim)
        self.modality_embedding = weight(len(specs), dim)
        self.null = weight(1, 1, dim)
        self.head = weight(dim, self.vocab_max)
        vocab = torch.tensor([spec.vocab_size for spec in specs.values()])
        self.register_buffer("vocab_mask", torch.arange(self.vocab_max)[None, :] >= vocab[:, None])

    def _own(self, batch_modalities: tuple[str, ...], index: torch.Tensor) -> torch.Tensor:
        lookup = torch.tensor([self.names.index(name) for name in batch_modalities])
        return lookup[index]

    def encode(self, batch: MaskedBatch):
        modality = self._own(batch.modalities, batch.enc_modality)
        x = (self.token_embedding[modality, batch.enc_tokens] + self.position_embedding[batch.enc_positions]
             + self.modality_embedding[modality])  # (B, Ni, D)
        memory = torch.cat([self.null.expand(x.shape[0], 1, -1), x], dim=1)
        valid = torch.cat([torch.ones_like(batch.enc_valid[:, :1]), batch.enc_valid], dim=1)
        return memory, valid

    def _read(self, query, memory, memory_valid, modality):
        scores = torch.einsum("bqd,bkd->bqk", query, memory) / query.shape[-1] ** 0.5
        scores = scores.masked_fill(~memory_valid[:, None, :], float("-inf"))
        context = torch.einsum("bqk,bkd->bqd", scores.softmax(-1), memory)
        logits = (query + context) @ self.head
        return logits.masked_fill(self.vocab_mask[modality], float("-inf"))

    def decode(self, memory, memory_valid, batch: MaskedBatch):
        modality = self._own(batch.modalities, batch.dec_modality)
        query = self.position_embedding[batch.dec_positions] + self.modality_embedding[modality]
        is_sequence = torch.tensor([spec.kind == "sequence" for spec in self.specs.values()])[modality]
        previous = self.token_embedding[modality, batch.dec_input_tokens]  # (B, Nt, D)
        # causal visibility inside one sequence modality: same modality, position <= own
        sees = ((modality[:, :, None] == modality[:, None, :])
                & (batch.dec_positions[:, None, :] <= batch.dec_positions[:, :, None])
                & batch.dec_valid[:, None, :] & is_sequence[:, :, None])
        history = torch.einsum("bqk,bkd->bqd", sees.to(previous.dtype), previous) / sees.sum(-1,
            keepdim=True).clamp(min=1)
        return self._read(query + history, memory, memory_valid, modality)

    def logits(self, batch: MaskedBatch):
        memory, valid = self.encode(batch)
        return self.decode(memory, valid, batch)

    def start_cache(self, memory, memory_valid):
        return {"memory": memory, "valid": memory_valid, "sum": None, "count": 0}

    def decode_step(self, cache, tokens_in, modality: str, position):
        own = self.names.index(modality)
        embedded = self.token_embedding[own, tokens_in]  # (B, 1, D)
        cache["sum"] = embedded if cache["sum"] is None else cache["sum"] + embedded
        cache["count"] += 1
        query = (self.position_embedding[position] + self.modality_embedding[own]
                 + cache["sum"] / cache["count"])
        index = torch.full_like(position, own)
        return self._read(query, cache["memory"], cache["valid"], index)


class FixedLogits(nn.Module):
    """Logits that depend only on (modality, position, whether the encoder has any input)."""

    def __init__(self, table_conditional: torch.Tensor, table_unconditional: torch.Tensor,
                 names: tuple[str, ...]):
        super().__init__()
        self.conditional = table_conditional  # (M, L, V)
        self.unconditional = table_unconditional
        self.names = names

    def encode(self, batch: MaskedBatch):
        return batch.enc_valid.any(dim=1).float()[:, None, None], batch.enc_valid

    def decode(self, memory, memory_valid, batch: MaskedBatch):
        lookup = torch.tensor([self.names.index(name) for name in batch.modalities])
        modality = lookup[batch.dec_modality]
        has_input = memory[:, :, 0].bool()  # (B, 1)
        cond = self.conditional[modality, batch.dec_positions]
        uncond = self.unconditional[modality, batch.dec_positions]
        return torch.where(has_input[:, :, None], cond, uncond)

    def logits(self, batch: MaskedBatch):
        return self.decode(*self.encode(batch), batch)
