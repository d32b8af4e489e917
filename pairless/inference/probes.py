"""Alignment probes: do a model's encodings of Ma alone and of Mb alone agree, sample by sample?

The study calls zero-shot translation a criterion of a unified latent representation, but never measures
that latent. These probes do. For a pair (Ma, Mb) and held-out samples that have both (the first
``num_samples`` in shard order, like the evaluation), the encoder gets all tokens of Ma alone, then all
tokens of Mb alone. Each sample's encoder states are mean-pooled over its valid input tokens (the null
token left out) at every encoder layer: entry 0 is the embedded input, entry i the residual stream after
block i, the last entry the normed encoder output that the decoder reads
(:meth:`pairless.model.FourM.encode_layers`). Between the two pooled sets, where row i of each is sample i:

- ``recall_at_1`` / ``recall_at_10``: cross-modal retrieval. For each sample's Ma encoding, is its own
  Mb encoding among the 1 (10) most cosine-similar Mb encodings? Both directions, averaged. Chance: k/N.
- ``foscttm``: the fraction of samples closer than the true match (cosine), averaged over samples and
  both directions, the standard of the multi-omics integration tools. 0 is perfect, 0.5 is chance.
- ``mutual_knn``: the mutual k-nearest-neighbour alignment of Huh et al. 2024 ("platonic
  representation"). It takes each sample's k nearest neighbours (cosine, itself excluded) within the Ma
  encodings and within the Mb encodings and reports the mean overlap of the two sets over k. 1 means the
  same neighbourhoods, k/(N-1) is chance. It needs no correspondence between the two spaces' axes.
- ``cka``: linear centred kernel alignment (Kornblith et al. 2019), invariant to rotations and isotropic
  scaling of either set. It is biased upwards for finite N: independent isotropic data give about
  sqrt(D_a D_b / ((N + D_a)(N + D_b))) (0.16 for D = 192, N = 1,000), hence the ``shuffled`` control.

Before the cosine metrics, each set is centred on its own mean: the encodings of two modalities differ by
a constant offset (the modality embedding, CLIP's "modality gap") that says nothing about which samples
match. Exact ties (a collapsed encoder) count as broken at random, so a constant encoding scores chance,
not perfect. ``shuffled`` holds the last layer's metrics after the Mb rows have been permuted (seeded): the
chance level of each metric at this N and D.

The metric functions are pure functions of two ``(N, D)`` arrays (numpy, float64). :func:`probe_model` runs
them for a model and token shards, :func:`probe_run` for a run folder (what ``pairless probe`` calls), and
:func:`record_probes` merges results into ``RUN/probes.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pairless import modalities as registry
from pairless.data.shards import open_shards
from pairless.inference.evaluate import eligible_samples, load_run_model, model_modalities, run_shards_path
from pairless.inference.generate import model_device, precision
from pairless.inference.translation_batch import pack_batch
from pairless.modalities import parse_pair
from pairless.utils.storage import merge_json
from pairless.utils.threads import torch_threads

METRICS = ("recall_at_1", "recall_at_10", "foscttm", "mutual_knn", "cka")
NEIGHBOURS = 10  # k of the mutual kNN alignment, as in Huh et al. 2024


# ----------------------------------------------------------------------------- metrics on two (N, D) sets


def _as_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or len(a) != len(b):
        raise ValueError(f"expected two (N, D) arrays with the same N, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError(f"need at least 2 samples, got {len(a)}")
    return a, b


def _unit_rows(x: np.ndarray, center: bool) -> np.ndarray:
    if center:
        x = x - x.mean(0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    # a zero row (e.g. a collapsed encoder, centred) has similarity 0 to everything: ties, scored as chance
    return x / np.maximum(norms, 1e-12)


def cosine_similarity(a, b, center: bool = True) -> np.ndarray:
    """``(N, M)`` cosine similarities between the rows of ``a`` and ``b``, each set centred first."""
    return _unit_rows(np.asarray(a, np.float64), center) @ _unit_rows(np.asarray(b, np.float64), center).T


def _true_match_ranks(similarity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row i: how many columns are strictly more similar than column i, and how many others tie it."""
    true = np.diag(similarity)[:, None]
    return (similarity > true).sum(1), (similarity == true).sum(1) - 1


def _recall_one_way(similarity: np.ndarray, k: int) -> float:
    greater, ties = _true_match_ranks(similarity)
    # Ties broken at random, in expectation: the true match is equally likely at each of the tied ranks
    # greater .. greater + ties, and it is retrieved when that rank is below k.
    return float(np.mean(np.clip((k - greater) / (ties + 1), 0.0, 1.0)))


def retrieval_recall(a, b, k: int = 1, center: bool = True) -> float:
    """Recall@k of retrieving row i of ``b`` from row i of ``a`` and back (cosine), the two averaged."""
    a, b = _as_pair(a, b)
    similarity = cosine_similarity(a, b, center)
    return 0.5 * (_recall_one_way(similarity, k) + _recall_one_way(similarity.T, k))


def _foscttm_one_way(similarity: np.ndarray) -> float:
    greater, ties = _true_match_ranks(similarity)
    return float(np.mean((greater + 0.5 * ties) / (len(similarity) - 1)))


def foscttm(a, b, center: bool = True) -> float:
    """Fraction of samples closer than the true match (cosine), mean over samples and both directions.

    For row i of ``a``: the fraction of the other N - 1 rows of ``b`` more similar to it than row i of
    ``b`` (ties count half); likewise from ``b`` to ``a``. 0 = every true match is the nearest, 0.5 = chance.
    """
    a, b = _as_pair(a, b)
    similarity = cosine_similarity(a, b, center)
    return 0.5 * (_foscttm_one_way(similarity) + _foscttm_one_way(similarity.T))


def nearest_neighbours(x, k: int, center: bool = True, generator: np.random.Generator | None = None
                       ) -> np.ndarray:
    """``(N, k)`` indices of each row's k most cosine-similar other rows, most similar first.

    Exact ties are broken by random keys from ``generator`` (default: seed 0).
    """
    x = np.asarray(x, dtype=np.float64)
    if not 0 < k < len(x):
        raise ValueError(f"k = {k} nearest neighbours need more than k samples, got {len(x)}")
    similarity = cosine_similarity(x, x, center)
    np.fill_diagonal(similarity, -np.inf)  # a sample is not its own neighbour
    tiebreak = (generator or np.random.default_rng(0)).random(similarity.shape)
    return np.lexsort((tiebreak, -similarity), axis=-1)[:, :k]


def mutual_knn(a, b, k: int = NEIGHBOURS, center: bool = True, seed: int = 0) -> float:
    """Mean over samples of |kNN_a(i) & kNN_b(i)| / k, each kNN set taken within its own space (Huh et al.).

    The two spaces' ties are broken by independent random keys (``seed``), so that two collapsed encoders
    score chance, k / (N - 1), not 1.
    """
    a, b = _as_pair(a, b)
    generator = np.random.default_rng(seed)
    neighbours_a = nearest_neighbours(a, k, center, generator)
    neighbours_b = nearest_neighbours(b, k, center, generator)
    rows = np.arange(len(a))[:, None]
    in_a = np.zeros((len(a), len(a)), dtype=bool)
    in_a[rows, neighbours_a] = True
    return float(in_a[rows, neighbours_b].sum(1).mean() / k)


def linear_cka(a, b) -> float:
    """Linear CKA: ||B'^T A'||_F^2 / (||A'^T A'||_F ||B'^T B'||_F) with A', B' the column-centred sets.

    1 when one set is a rotation and isotropic scaling of the other; 0 for a constant set.
    """
    a, b = _as_pair(a, b)
    a, b = a - a.mean(0), b - b.mean(0)
    denominator = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    if denominator == 0:
        return 0.0
    return float(np.linalg.norm(b.T @ a) ** 2 / denominator)


def alignment_metrics(a, b, k: int = NEIGHBOURS, seed: int = 0) -> dict[str, float]:
    """Every metric of :data:`METRICS` between two ``(N, D)`` sets whose row i is the same sample."""
    a, b = _as_pair(a, b)
    return {"recall_at_1": retrieval_recall(a, b, 1), "recall_at_10": retrieval_recall(a, b, 10),
            "foscttm": foscttm(a, b), "mutual_knn": mutual_knn(a, b, k, seed=seed), "cka": linear_cka(a, b)}


# ----------------------------------------------------------------------------- encoding a modality alone


def pooled_encodings(model, shards, modality: str, indices: np.ndarray, batch_size: int,
                     modalities: tuple[str, ...]) -> list[np.ndarray]:
    """Per encoder layer, ``(N, D)`` float32: each sample's states averaged over its valid input tokens.

    The encoder gets every token of ``modality`` and nothing else (padding of a sequence excluded). Call
    within ``torch.inference_mode`` (and autocast, for bf16), as :func:`probe_model` does.
    """
    device = model_device(model)
    layers: list[list[np.ndarray]] | None = None
    chunks = range(0, len(indices), batch_size)
    for start in tqdm(chunks, desc=f"probe {modality}", disable=None, leave=False):
        rows = indices[start : start + batch_size]
        tokens = torch.from_numpy(np.asarray(shards.tokens[modality][rows])).long()
        batch = pack_batch({modality: (tokens, torch.ones_like(tokens, dtype=torch.bool))}, {}, shards.specs,
                           modalities)
        states, valid = model.encode_layers(batch.to(device))
        offset = model.input_offset  # slot 0 is the null token (if the model has one), left out
        weights = valid[:, offset:, None].float()  # (B, Ni, 1)
        pooled = [((state[:, offset:].float() * weights).sum(1) / weights.sum(1)).cpu().numpy()
                  for state in states]
        layers = [[] for _ in pooled] if layers is None else layers
        for layer, array in zip(layers, pooled, strict=True):
            layer.append(array)
    return [np.concatenate(parts) for parts in layers or []]


def _check_modalities(model, shards, names: list[str]) -> None:
    trained = tuple(getattr(model, "specs", shards.specs))
    for name in names:
        if name in trained:
            continue
        if name in shards.specs or name in registry.names():
            raise ValueError(f"modality {name!r}: the run was not trained on it; it was trained on "
                             f"{', '.join(trained)}")
        raise ValueError(f"unknown modality {name!r}; the run was trained on {', '.join(trained)}")


def probe_model(model, shards, first: str, second: str, num_samples: int = 1000, batch_size: int = 128,
                threads: int | None = None, k: int = NEIGHBOURS, seed: int = 0) -> dict:
    """Alignment metrics between ``first``-only and ``second``-only encodings, per encoder layer.

    Samples: the first ``num_samples`` of ``shards`` (shard order) that have both modalities; fewer if the
    split holds fewer, but more than ``k``. Returns ``{"pair", "num_samples", "k", "layers": [{"layer": i,
    metric: value}], "summary": the last layer's row, "shuffled": the last layer's metrics with the
    ``second`` rows permuted (the chance levels)}``. ``threads``: torch threads (None: the current count).
    """
    pair = f"{first}:{second}"
    _check_modalities(model, shards, [first, second])
    modalities = model_modalities(model, shards.specs, [first, second])
    indices = eligible_samples(shards, [first, second], num_samples)
    if len(indices) <= k:
        split = getattr(shards, "split", None)
        where = f" of the {split!r} split" if split else ""
        found = (f"num_samples = {num_samples}" if len(indices) == num_samples
                 else f"only {len(indices)} samples{where} have both {first!r} and {second!r}")
        raise ValueError(f"pair {pair}: {found}; the probes need more than {k} samples (mutual kNN with "
                         f"k = {k}), and about 1,000 for stable figures")
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with torch.inference_mode(), precision(model_device(model)), torch_threads(threads):
            encoded = {name: pooled_encodings(model, shards, name, indices, batch_size, modalities)
                       for name in (first, second)}
    finally:
        if was_training:
            model.train()
    layers = [{"layer": layer, **alignment_metrics(a, b, k, seed)}
              for layer, (a, b) in enumerate(zip(encoded[first], encoded[second], strict=True))]
    permutation = np.random.default_rng(seed).permutation(len(indices))
    shuffled = alignment_metrics(encoded[first][-1], encoded[second][-1][permutation], k, seed)
    return {"pair": pair, "num_samples": len(indices), "k": k, "layers": layers, "summary": layers[-1],
            "shuffled": shuffled}


def probe_run(run: Path, pair: str, num_samples: int = 1000, batch_size: int = 128,
              threads: int | None = None, split: str = "val", shards_path: Path | None = None,
              device: str | torch.device = "cpu") -> dict:
    """:func:`probe_model` for a trained run and a pair ``"Ma:Mb"`` on its shards' ``split``, the model on
    ``device``; the result records the thread count and device."""
    first, second = parse_pair(pair)
    model = load_run_model(Path(run), device)
    shards = open_shards(shards_path or run_shards_path(Path(run)), split)
    used = {"threads": torch.get_num_threads() if threads is None else threads,
            "device": str(model_device(model))}
    return {**probe_model(model, shards, first, second, num_samples, batch_size, threads), "split": split,
            **used}


def record_probes(run: Path, results: dict[str, dict]) -> Path:
    """Merge ``{pair: result}`` into ``RUN/probes.json`` (pairs probed before are kept); returns its path."""
    return merge_json(Path(run) / "probes.json", results)


def format_table(result: dict) -> str:
    """One row per encoder layer (and the shuffled control), one column per metric."""
    names = {"recall_at_1": "recall@1", "recall_at_10": "recall@10", "foscttm": "FOSCTTM",
             "mutual_knn": f"mutual {result['k']}-NN", "cka": "linear CKA"}
    last = len(result["layers"]) - 1
    labels = {0: "0 (input)", last: f"{last} (output)"}
    lines = [f"{result['pair']}: {result['num_samples']} samples",
             f"{'layer':<12}" + "".join(f"{names[metric]:>13}" for metric in METRICS)]
    rows = [(labels.get(row["layer"], str(row["layer"])), row) for row in result["layers"]]
    for label, row in [*rows, ("shuffled", result["shuffled"])]:
        lines.append(f"{label:<12}" + "".join(f"{row[metric]:>13.4f}" for metric in METRICS))
    return "\n".join(lines)
