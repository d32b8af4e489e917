"""Per-sample random numbers for masking: a pure function of ``(seed, step, sample index, purpose, k)``.

The ``sample`` masking stream (``TrainConfig.masking_stream``) gives every sample of every step its own
key, derived from the training seed, the step and the sample's index in the training data. Every random
number its masking uses is then counter-based: uniform number ``k`` of purpose ``p`` for a sample is the
SplitMix64 output at counter ``p + k`` of that sample's key. Nothing depends on the other samples of the
batch or on the order of draws, so

- a process can mask its own slice of the global batch and get exactly the rows that masking the whole
  batch would give (the batch does not depend on the number of processes);
- the token counts of the whole global batch (what the budget counts) can be computed without the
  expensive part of masking (the per-slot noise), by drawing only the counters that decide them;
- everything is vectorised over samples with numpy's wrapping uint64 arithmetic: no generator per sample.

SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014) passes
BigCrush; its output is a bijective mix of ``key + counter * golden gamma``.
"""

from __future__ import annotations

import numpy as np

GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)

# Counter regions of one sample's stream; regions never overlap for any realistic size.
ALPHA = 0  # which Dirichlet concentration of MaskingConfig.alphas
EMPTY = 1  # whether the sample gets no input
WHOLE = 2  # whether a sequence modality of the sample is a whole target (masking.whole_sequence_fraction)
WHOLE_PICK = 3  # which sequence modality of its view it is
BOOST = 16  # the alpha < 1 boost of each gamma entry (inputs: modality m, targets: M + m)
NOISE = 1 << 24  # one uniform per (modality, position) slot: the order tokens are chosen in
GAMMA = 1 << 40  # Marsaglia-Tsang candidates: round r, entry j -> 3 uniforms
# span masking of sequence modality m: its keep probability at SPAN + m, the choice of the sentinel a long
# target starts at at SPAN + SPAN_CHOICE + m, the draw of its position p at SPAN + (m + 1) * SPAN_STRIDE + p
SPAN = 1 << 32
SPAN_CHOICE = 1 << 10
SPAN_STRIDE = 1 << 16


def _mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's output function (a bijection on uint64; arrays wrap modulo 2**64)."""
    values = (values ^ (values >> np.uint64(30))) * _MIX_1
    values = (values ^ (values >> np.uint64(27))) * _MIX_2
    return values ^ (values >> np.uint64(31))


def sample_keys(step_seed: int, indices: np.ndarray) -> np.ndarray:
    """One uint64 key per sample from the step's seed and the samples' indices in the training data."""
    indices = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    base = np.full(indices.shape, step_seed & 0xFFFF_FFFF_FFFF_FFFF, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix(base ^ _mix((indices + np.uint64(1)) * GOLDEN_GAMMA))


def uniforms(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """Uniform float64 in [0, 1) at ``counters`` of each key; ``keys`` (B,), ``counters`` (B, K) or (K,)."""
    keys = np.asarray(keys, dtype=np.uint64)
    counters = np.asarray(counters, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        state = keys[:, None] + (counters + np.uint64(1)) * GOLDEN_GAMMA
        return (_mix(state) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def gamma(keys: np.ndarray, concentration: np.ndarray, first_candidates: int = 3) -> np.ndarray:
    """Gamma(concentration, 1) samples ``(B, J)``, entry ``j`` of row ``b`` from key ``b`` only.

    Marsaglia-Tsang rejection like :func:`pairless.training.budgets.sample_gamma`: candidate ``r`` of entry
    ``j`` uses counters ``GAMMA + 3 (r J + j) + {0, 1, 2}`` (two uniforms make the normal by Box-Muller,
    the third decides acceptance) and the first accepted candidate is the sample; the alpha < 1 boost is
    at ``BOOST + j``. The first ``first_candidates`` candidates of every entry are tried at once (each is
    accepted with probability > 0.95), the rest one round at a time: the result does not depend on it.
    """
    alpha = np.asarray(concentration, dtype=np.float64)
    batch, count = alpha.shape
    boosted = np.where(alpha < 1, alpha + 1, alpha)
    d = boosted - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    result = np.zeros_like(alpha)
    pending = np.ones_like(alpha, dtype=bool)
    entry = np.arange(count)
    candidate = 0
    while pending.any():
        rows, columns = np.nonzero(pending)
        tries = first_candidates if candidate == 0 else 1
        rounds = candidate + np.arange(tries)  # (K,)
        base = GAMMA + 3 * (rounds[None, :] * count + entry[columns][:, None])  # (P, K)
        draws = uniforms(keys[rows], np.concatenate([base, base + 1, base + 2], 1))  # (P, 3K)
        first, second, third = draws[:, :tries], draws[:, tries:2 * tries], draws[:, 2 * tries:]
        normal = np.sqrt(-2.0 * np.log1p(-first)) * np.cos(2.0 * np.pi * second)
        shift, scale = d[rows, columns][:, None], c[rows, columns][:, None]
        v = (1 + scale * normal) ** 3
        with np.errstate(invalid="ignore", divide="ignore"):
            accept = (v > 0) & (np.log(third) < 0.5 * normal**2 + shift - shift * v
                                + shift * np.log(np.maximum(v, 1e-300)))
        found = accept.any(1)
        chosen = accept.argmax(1)  # the first accepted candidate
        value = (shift[:, 0] * v[np.arange(len(rows)), chosen])
        result[rows[found], columns[found]] = value[found]
        pending[rows[found], columns[found]] = False
        candidate += tries
    boost = uniforms(keys, BOOST + entry) if batch else np.zeros((0, count))
    return np.where(alpha < 1, result * boost ** (1.0 / alpha), result)


def order_keys(keys: np.ndarray, slots: int) -> np.ndarray:
    """A random order of each sample's (modality, position) slots: int64 ``(B, slots)``, smaller first.

    40 random bits above the slot's own index, so that no two slots of a sample tie (a float32 uniform per
    slot ties at the 2**-24 resolution in about one 256-slot row in 500) and the k first slots of a row are
    exactly those below its k-th smallest key: one sort per modality instead of argsort twice.
    """
    slot = np.arange(slots, dtype=np.uint64)
    keys = np.asarray(keys, dtype=np.uint64)
    with np.errstate(over="ignore"):
        state = keys[:, None] + (slot + np.uint64(NOISE + 1)) * GOLDEN_GAMMA
        return ((_mix(state) >> np.uint64(24)) << np.uint64(16) | slot).astype(np.int64)


def first_of(order: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """For each column of ``counts`` ``(B, K)``, the mask of each row's ``counts[:, k]`` first entries of
    ``order`` ``(B, L)`` (distinct within a row)."""
    ordered = np.sort(order, axis=1)
    last = order.shape[1] - 1
    masks = []
    for column in range(counts.shape[1]):
        count = counts[:, column:column + 1]
        threshold = np.take_along_axis(ordered, np.clip(count - 1, 0, last), axis=1)
        masks.append((order <= threshold) & (count > 0))
    return masks
