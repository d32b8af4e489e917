"""Attention kernels behind one function: explicit matmul + softmax, or PyTorch's SDPA.

Masks are built once per forward as booleans ``(B, 1, Nq, Nk)`` (True = may
attend) and converted once by :func:`prepare_mask` into what the chosen
kernel wants, in the compute dtype (so that bf16 autocast does not upcast
scores), then reused by every layer:

- ``explicit``: an additive mask already expanded to ``(B * H, Nq, Nk)``, so
  that scaling, masking and QK^T are one ``baddbmm``;
- ``sdpa``: ``F.scaled_dot_product_attention`` with the additive mask
  ``(B, 1, Nq, Nk)``.

``auto`` picks per device, at every call: SDPA on a GPU (fused kernels, no fp32 score matrix kept for the
backward), explicit on a CPU, where ``benchmarks/train_throughput.py`` measured it faster with our masks in
bf16 (anchor: 8,392 against 5,128 tokens/s, 2026-11-23). Both compute the same function, so weights trained
with one run with the other.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

AttentionKind = Literal["auto", "explicit", "sdpa"]


def resolve_attention(kind: AttentionKind, device_type: str) -> str:
    """The kernel ``kind`` means on a device of ``device_type`` ("cpu", "cuda", ...)."""
    if kind != "auto":
        return kind
    return "sdpa" if device_type == "cuda" else "explicit"


def compute_dtype(reference: torch.Tensor) -> torch.dtype:
    """The dtype matmuls run in: the autocast dtype when autocast is on, else the tensor's own."""
    device_type = reference.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return reference.dtype


def prepare_mask(mask: torch.Tensor, reference: torch.Tensor, kind: AttentionKind,
                 heads: int, finite: bool = False) -> torch.Tensor:
    """Additive mask (0 where allowed, -inf elsewhere) in the compute dtype of ``reference``.

    Every query row must allow at least one key, or its softmax is NaN. ``finite`` (ml-4m's choice) fills
    with the dtype's lowest finite value instead: a row that allows no key then averages all of them.
    """
    dtype = compute_dtype(reference)
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    bias.masked_fill_(~mask, -torch.finfo(dtype).max if finite else float("-inf"))
    if resolve_attention(kind, reference.device.type) == "sdpa":
        return bias
    batch, _, queries, keys = mask.shape
    return bias.expand(batch, heads, queries, keys).reshape(batch * heads, queries, keys)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
           kind: AttentionKind) -> torch.Tensor:
    """Attention output ``(B, H, Nq, hd)`` for q ``(B, H, Nq, hd)``, k/v ``(B, H, Nk, hd)``."""
    if resolve_attention(kind, q.device.type) == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    batch, heads, queries, head_dim = q.shape
    q, k, v = (t.reshape(batch * heads, t.shape[2], head_dim) for t in (q, k, v))
    scores = torch.baddbmm(mask, q, k.transpose(1, 2), alpha=head_dim**-0.5)  # (B * H, Nq, Nk)
    return torch.bmm(scores.softmax(-1), v).view(batch, heads, queries, head_dim)
