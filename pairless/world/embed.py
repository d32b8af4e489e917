"""The ``embed`` modality of the world: a fixed, deterministic stand-in for a CLIP-like expert.

4M's global feature targets come from a frozen expert network; no network can
be downloaded here, so the world's "expert" is a fixed linear map of what such
a feature mostly carries, the scene's semantic content, independent of the
camera and the light:

1. an attribute histogram of the visible objects, 60 numbers: counts per
   (shape, colour) (4 x 8), per (shape, size) (4 x 2), per (colour, size)
   (8 x 2), and a one-hot of the object count (1..4);
2. times a fixed Gaussian random matrix (60 x 64, drawn from ``EMBED_SEED``,
   scaled by 1/sqrt(60)), then L2-normalised, like CLIP features.

The 64 x 60 projection has full column rank and the count one-hot fixes the
scale, so the histogram (hence object identities, colours, sizes and count)
is recoverable from the vector: the feature is informative but not a trivial
copy of another modality (positions, pose and appearance are absent).
"""

from __future__ import annotations

import numpy as np

from pairless.modalities import EMBED_DIM
from pairless.world.scenes import COLOUR_NAMES, MAX_OBJECTS, SHAPES, SIZES

EMBED_SEED = 20240601
NUM_ATTRIBUTES = len(SHAPES) * len(COLOUR_NAMES) + len(SHAPES) * len(SIZES) + len(COLOUR_NAMES) * len(SIZES) \
    + MAX_OBJECTS


def projection() -> np.ndarray:
    """The expert's fixed (NUM_ATTRIBUTES, EMBED_DIM) float32 matrix (same on every call and machine)."""
    rng = np.random.default_rng(EMBED_SEED)
    return (rng.standard_normal((NUM_ATTRIBUTES, EMBED_DIM)) / np.sqrt(NUM_ATTRIBUTES)).astype(np.float32)


def attribute_histogram(shape: np.ndarray, colour: np.ndarray, size: np.ndarray,
                        visible: np.ndarray) -> np.ndarray:
    """(N, K) shape/colour/size indices and visibility -> (N, NUM_ATTRIBUTES) float32 histogram."""
    count = len(shape)
    num_shapes, num_colours, num_sizes = len(SHAPES), len(COLOUR_NAMES), len(SIZES)
    weight = visible.astype(np.float32)
    parts = []
    for index, width in ((shape * num_colours + colour, num_shapes * num_colours),
                         (shape * num_sizes + size, num_shapes * num_sizes),
                         (colour * num_sizes + size, num_colours * num_sizes)):
        histogram = np.zeros((count, width), dtype=np.float32)
        np.add.at(histogram, (np.repeat(np.arange(count), shape.shape[1]), index.ravel()), weight.ravel())
        parts.append(histogram)
    total = visible.sum(axis=1)
    parts.append(np.eye(MAX_OBJECTS, dtype=np.float32)[np.clip(total - 1, 0, MAX_OBJECTS - 1)]
                 * (total > 0)[:, None])
    return np.concatenate(parts, axis=1)


def embed_scenes(shape: np.ndarray, colour: np.ndarray, size: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """(N, K) object attributes -> (N, EMBED_DIM) float32 unit vectors (zeros for an empty scene)."""
    features = attribute_histogram(shape, colour, size, visible) @ projection()
    norm = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norm, 1e-12)).astype(np.float32)
