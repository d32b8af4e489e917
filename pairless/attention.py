"""Attention kernels behind one function: explicit matmul + softmax, or PyTorch's SDPA.

Masks are built once per forward as booleans ``(B, 1, Nq, Nk)`` (True = may
attend) and converted by :func:`prepare_mask` into what the chosen kernel
wants, in the compute dtype (so that bf16 autocast does not upcast scores).
``benchmarks/train_throughput.py`` measures both kernels on CPU with our
masks; the faster one is :class:`pairless.model.ModelConfig`'s default.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

AttentionKind = Literal["explicit", "sdpa"]


def compute_dtype(reference: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in: the autocast dtype when autocast is on, else the tensor's own."""
    device_type = reference.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return reference.dtype


def prepare_mask(mask: torch.Tensor, reference: torch.Tensor, kind: AttentionKind) -> torch.Tensor:
    """Additive mask (0 where allowed, -inf elsewhere) in the compute dtype of ``reference``.

    Every query row must allow at least one key, or its softmax is NaN.
    """
    del kind  # both kernels take the same additive mask; kept for a kernel that would not
    bias = torch.zeros(mask.shape, dtype=compute_dtype(reference), device=mask.device)
    return bias.masked_fill_(~mask, float("-inf"))


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, kind: AttentionKind) -> torch.Tensor:
    """Attention output ``(B, H, Nq, hd)`` for q ``(B, H, Nq, hd)``, k/v ``(B, H, Nk, hd)``."""
    if kind == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5) + mask  # (B, H, Nq, Nk)
    return torch.matmul(scores.softmax(-1).to(v.dtype), v)
