"""Per-modality normalisation of image-like values: natural form <-> network tensors, and the loss.

A spatial tokenizer sees every image modality through one of five
normalisations (stored in its config.json, statistics included):

===============  ===========================  ==========================  =======================
kind             natural input                network input               loss / decoding
===============  ===========================  ==========================  =======================
unit_range       uint8 (H, W[, C]), 0..255    x / 127.5 - 1 in [-1, 1]    MSE; round, clip to uint8
log_standard     float32 (H, W[, C]), > 0     (log x - mean) / std        L1; exp(y * std + mean)
standard         float32 (H, W[, C])          (x - mean) / std            MSE; y * std + mean
unit_vector      uint8 (H, W, 3), (n+1)/2*255  n = x / 127.5 - 1           MSE + (1 - cos); renormalised (1)
labels           uint8 (H, W) class ids       one-hot over num_classes    cross-entropy; argmax
===============  ===========================  ==========================  =======================

(1) outputs shorter than 0.5 (pixels without a normal, stored as ~0) decode to 0.

Statistics (``mean``/``std``, one per channel) are fitted on the training
split only. Defaults: rgb -> unit_range, depth -> log_standard, normal ->
unit_vector, semseg (any modality with ``num_classes``) -> labels, other
uint8 images -> unit_range, other float images -> standard.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from pairless.config import Config
from pairless.modalities import Modality

NormalizationKind = Literal["unit_range", "log_standard", "standard", "unit_vector", "labels"]

# Depth and other positive maps are clamped here before the log, so a stray 0 cannot give -inf.
_MIN_POSITIVE = 1e-6


class ImageNormalization(Config):
    """How one image modality is turned into network tensors and back."""

    kind: NormalizationKind
    channels: int = 0  # natural trailing channels; 0 = a plain (H, W) map
    num_classes: int | None = None  # labels only
    dtype: str = "uint8"  # natural numpy dtype
    mean: list[float] = []
    std: list[float] = []


def default_kind(modality: Modality) -> NormalizationKind:
    """The normalisation a modality gets unless the config says otherwise."""
    if modality.normalization is not None:
        return modality.normalization  # type: ignore[return-value]
    if modality.name == "depth":
        return "log_standard"
    if modality.name == "normal":
        return "unit_vector"
    if modality.num_classes is not None:
        return "labels"
    return "unit_range" if modality.dtype == "uint8" else "standard"


def fit_normalization(modality: Modality, values: np.ndarray, kind: NormalizationKind | None = None,
                      num_classes: int | None = None) -> ImageNormalization:
    """Choose the normalisation of ``modality``; fit its statistics on training ``values`` [N, H, W(, C)]."""
    kind = kind or default_kind(modality)
    channels = values.shape[3] if values.ndim == 4 else 0
    if kind == "labels":
        num_classes = num_classes or modality.num_classes or int(values.max()) + 1
        return ImageNormalization(kind=kind, channels=0, num_classes=num_classes, dtype=modality.dtype)
    if kind in ("log_standard", "standard"):
        data = np.asarray(values, dtype=np.float64)
        if kind == "log_standard":
            data = np.log(np.maximum(data, _MIN_POSITIVE))
        per_channel = data.reshape(-1, max(channels, 1))
        mean = per_channel.mean(axis=0)
        std = np.maximum(per_channel.std(axis=0), 1e-6)
        return ImageNormalization(kind=kind, channels=channels, dtype=modality.dtype,
                                  mean=[float(v) for v in mean], std=[float(v) for v in std])
    return ImageNormalization(kind=kind, channels=channels, dtype=modality.dtype)


def input_channels(norm: ImageNormalization) -> int:
    if norm.kind == "labels":
        return int(norm.num_classes)
    return max(norm.channels, 1)


def output_channels(norm: ImageNormalization) -> int:
    return input_channels(norm)


def _channels_first(values: np.ndarray) -> torch.Tensor:
    # A copy: values may be a read-only memory map, which torch refuses to wrap.
    tensor = torch.from_numpy(np.array(values))
    return tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)


def to_network(norm: ImageNormalization, values: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Natural batch -> (network input (N, C, H, W) float32, loss target)."""
    if norm.kind == "labels":
        ids = torch.from_numpy(np.asarray(values).astype(np.int64))  # (N, H, W)
        one_hot = F.one_hot(ids, norm.num_classes).permute(0, 3, 1, 2).float()
        return one_hot, ids
    tensor = _channels_first(values).float()
    if norm.kind in ("unit_range", "unit_vector"):
        tensor = tensor / 127.5 - 1.0
    else:
        if norm.kind == "log_standard":
            tensor = torch.log(tensor.clamp_min(_MIN_POSITIVE))
        mean = torch.tensor(norm.mean).view(1, -1, 1, 1)
        std = torch.tensor(norm.std).view(1, -1, 1, 1)
        tensor = (tensor - mean) / std
    return tensor, tensor


def loss(norm: ImageNormalization, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reconstruction loss of one batch (output: (N, C, H, W) network output)."""
    output = output.float()
    if norm.kind == "labels":
        return F.cross_entropy(output, target)
    if norm.kind == "log_standard":
        return F.l1_loss(output, target)
    if norm.kind == "unit_vector":
        cosine = F.cosine_similarity(output, target, dim=1, eps=1e-6)
        return F.mse_loss(output, target) + (1.0 - cosine).mean()
    return F.mse_loss(output, target)


def from_network(norm: ImageNormalization, output: torch.Tensor) -> np.ndarray:
    """Network output (N, C, H, W) -> natural batch in the modality's dtype."""
    output = output.float()
    if norm.kind == "labels":
        return output.argmax(dim=1).numpy().astype(norm.dtype)
    if norm.kind == "unit_vector":
        # Pixels without a normal (background, stored as ~0) come back as ~0: keep them there
        # instead of blowing a near-zero prediction up to an arbitrary unit vector.
        length = output.norm(dim=1, keepdim=True)
        output = torch.where(length >= 0.5, output / length.clamp_min(1e-6), torch.zeros_like(output))
    if norm.kind in ("unit_range", "unit_vector"):
        output = ((output + 1.0) * 127.5).round().clamp(0, 255)
    else:
        mean = torch.tensor(norm.mean).view(1, -1, 1, 1)
        std = torch.tensor(norm.std).view(1, -1, 1, 1)
        output = output * std + mean
        if norm.kind == "log_standard":
            output = torch.exp(output)
    array = output.permute(0, 2, 3, 1).numpy()
    if norm.channels == 0:
        array = array[..., 0]
    return np.ascontiguousarray(array).astype(norm.dtype)
