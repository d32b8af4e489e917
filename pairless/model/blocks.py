"""Building blocks of :class:`~pairless.model.transformer.FourM`: fixed sin-cos positions, the index
tables computed from the specs, and the pre-norm transformer block (self-attention with an optional KV
cache, optional cross-attention, MLP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pairless.batch import TokenSpec
from pairless.model.architecture import swiglu_hidden
from pairless.model.attention import attend
from pairless.model.config import ModelConfig


def sincos_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed sin-cos embedding ``(N, dim)`` of float positions ``(N,)``; periods 2 pi to 2 pi temperature."""
    frequencies = 1.0 / (temperature ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2)))
    angles = positions.double().unsqueeze(1) * frequencies.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], 1).float()


def position_table(spec: TokenSpec, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sin-cos positions ``(num_tokens, dim)``: 2-D over the grid for images, 1-D otherwise."""
    if spec.kind == "image" and spec.grid is not None:
        height, width = spec.grid
        rows = torch.arange(height).repeat_interleave(width)
        columns = torch.arange(width).repeat(height)
        return torch.cat([sincos_1d(rows, dim // 2, temperature), sincos_1d(columns, dim // 2, temperature)],
                         1)
    return sincos_1d(torch.arange(spec.num_tokens), dim, temperature)


def index_buffers(config: ModelConfig, specs: dict[str, TokenSpec]) -> dict[str, torch.Tensor]:
    """FourM's tables computed from its config and specs (buffers not saved with the weights), in the
    order FourM registers them. Always computed on the CPU (also inside ``torch.device("meta")``, where
    :mod:`pairless.model.ml4m` builds a model whose weights all come from a file)."""
    with torch.device("cpu"):
        return _index_buffers(config, specs)


def _index_buffers(config: ModelConfig, specs: dict[str, TokenSpec]) -> dict[str, torch.Tensor]:
    vocab = torch.tensor([spec.vocab_size for spec in specs.values()])
    lengths = torch.tensor([spec.num_tokens for spec in specs.values()])
    return {
        "vocab_size": vocab, "vocab_offset": torch.cumsum(vocab, 0) - vocab,
        "slot_offset": torch.cumsum(lengths, 0) - lengths,
        "slot_modality": torch.repeat_interleave(torch.arange(len(specs)), lengths),
        "sincos": config.position_scale * torch.cat([position_table(spec, config.dim,
                                                                    config.position_temperature)
                                                     for spec in specs.values()]),
        "is_sequence": torch.tensor([spec.kind == "sequence" for spec in specs.values()]),
    }


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection and an optional KV cache."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.kind = config.heads, config.attention
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=config.bias)
        self.proj = nn.Linear(config.dim, config.dim, bias=config.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:  # generation: append this step's keys/values to the ones seen so far
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        out = attend(q, k, v, mask, self.kind)  # (B, H, N, hd)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class CrossAttention(nn.Module):
    """Decoder queries attending to the encoder output (keys/values computable once)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads, self.kind = config.heads, config.attention
        self.q = nn.Linear(config.dim, config.dim, bias=config.bias)
        self.kv = nn.Linear(config.dim, 2 * config.dim, bias=config.bias)
        self.proj = nn.Linear(config.dim, config.dim, bias=config.bias)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, dim = memory.shape
        k, v = self.kv(memory).view(batch, length, 2, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q = self.q(x).view(batch, length, self.heads, dim // self.heads).transpose(1, 2)
        out = attend(q, *memory_kv, mask, self.kind)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, [cross-attention], MLP.

    With ``context_projection`` (ml-4m) a decoder block norms the context before its keys and values.
    """

    def __init__(self, config: ModelConfig, cross: bool):
        super().__init__()
        dim, architecture = config.dim, config.architecture()
        eps = architecture.norm_eps
        self.norm1 = nn.LayerNorm(dim, eps=eps, bias=config.bias)
        self.attention = SelfAttention(config)
        self.cross = CrossAttention(config) if cross else None
        self.norm_cross = nn.LayerNorm(dim, eps=eps, bias=config.bias) if cross else None
        self.context_norm = (nn.LayerNorm(dim, eps=eps, bias=config.bias)
                             if cross and architecture.context_projection else None)
        self.norm2 = nn.LayerNorm(dim, eps=eps, bias=config.bias)
        self.gated = architecture.mlp == "swiglu"
        hidden = swiglu_hidden(dim, config.mlp_ratio) if self.gated else int(dim * config.mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden, bias=config.bias)  # gated: the gate, through SiLU
        self.fc2 = nn.Linear(hidden, dim, bias=config.bias)
        self.fc3 = nn.Linear(dim, hidden, bias=config.bias) if self.gated else None  # gated: the value
        self.dropout = nn.Dropout(config.dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This block's cross-attention keys and values of the encoder output (computable once)."""
        return self.cross.memory_kv(memory if self.context_norm is None else self.context_norm(memory))

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))
        return self.fc2(F.gelu(self.fc1(x)))

    def forward(self, x, mask, memory_kv=None, memory_mask=None, cache=None, memory=None):
        if memory is not None:  # the encoder output: keys/values computed inside this call (a sharded block
            memory_kv = self.memory_kv(memory)  # has its weights gathered only during its own call)
        x = x + self.dropout(self.attention(self.norm1(x), mask, cache))
        if self.cross is not None:
            x = x + self.dropout(self.cross(self.norm_cross(x), memory_kv, memory_mask))
        return x + self.dropout(self.mlp(self.norm2(x)))
