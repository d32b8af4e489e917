"""Fragmentation: which modalities each training sample exposes (its *view*).

A *withheld pair* (a, b) is a pair of modalities that must never appear
together in one training sample. Every sample is assigned, once and for all,
one of the maximal subsets of the training universe that contain no withheld
pair (for one pair: "all but b" or "all but a"); the choice is a stable hash
of ``(seed, sample id)``, so it is identical across epochs, processes and
ranks and does not depend on the order in which samples are visited.

Real data is fragmented already: a sample lacking a modality can only expose
what it has. Among the candidate views restricted to what the sample has, the
ones that are still maximal are kept (a sample without b therefore keeps a:
nothing it has is dropped needlessly), and the hash picks among them.

``pairless audit`` prints the resulting co-occurrence matrix.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pairless.config import Config, ConfigError
from pairless.data.shards import open_shards


class FragmentConfig(Config):
    """Which modalities take part in training and which pairs never co-occur."""

    universe: list[str] | None = None  # modalities used in training; None = every modality in the shards
    withheld: list[tuple[str, str]] = []  # pairs that must never appear together in a training sample
    seed: int = 0


def resolve_universe(modalities: list[str], config: FragmentConfig) -> list[str]:
    """Check ``config`` against the data's modalities; return the universe in data order.

    Raises ConfigError naming the field: an unknown modality, a withheld pair
    with a modality outside the universe, or a pair of the same modality.
    """
    known = list(modalities)
    if config.universe is None:
        universe = known
    else:
        for name in config.universe:
            if name not in known:
                raise ConfigError(f"fragment.universe: unknown modality {name!r}; "
                                  f"allowed: {', '.join(known)}")
        universe = [name for name in known if name in config.universe]
    for pair in config.withheld:
        first, second = pair
        for name in pair:
            if name not in known:
                raise ConfigError(
                    f"fragment.withheld: unknown modality {name!r} in pair {first}:{second}; allowed: "
                    f"{', '.join(known)}"
                )
            if name not in universe:
                raise ConfigError(
                    f"fragment.withheld: pair {first}:{second} is outside the universe "
                    f"({name!r} not in {', '.join(universe)})"
                )
        if first == second:
            raise ConfigError(f"fragment.withheld: pair {first}:{second} names the same modality twice")
    return universe


def maximal_views(universe: list[str], withheld: list[tuple[str, str]]) -> list[frozenset[str]]:
    """All maximal subsets of ``universe`` containing no withheld pair, in a fixed order.

    These are the maximal independent sets of the graph whose edges are the
    withheld pairs (Bron-Kerbosch with pivoting on its complement).
    """
    conflicts = {name: set() for name in universe}
    for first, second in withheld:
        conflicts[first].add(second)
        conflicts[second].add(first)
    # Compatible = not withheld together; views are the maximal cliques of this graph.
    compatible = {name: set(universe) - conflicts[name] - {name} for name in universe}
    found: list[frozenset[str]] = []

    def expand(chosen: set[str], candidates: set[str], excluded: set[str]) -> None:
        if not candidates and not excluded:
            found.append(frozenset(chosen))
            return
        pivot = max(candidates | excluded, key=lambda name: len(compatible[name] & candidates))
        for name in sorted(candidates - compatible[pivot]):
            expand(chosen | {name}, candidates & compatible[name], excluded & compatible[name])
            candidates = candidates - {name}
            excluded = excluded | {name}

    expand(set(), set(universe), set())
    order = {name: index for index, name in enumerate(universe)}
    # Larger views first, then by the data order of their members: a fixed, documented order.
    return sorted(found, key=lambda view: (-len(view), sorted(order[name] for name in view)))


def stable_hash(seed: int, sample_id: str) -> int:
    """A 64-bit hash of ``f"{seed}:{sample_id}"`` that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{sample_id}".encode(), digest_size=8).digest(), "little")


def assign_views(ids: list[str], present: np.ndarray, modalities: list[str],
                 config: FragmentConfig) -> np.ndarray:
    """The view of each sample: bool ``[N, M]`` over ``modalities`` (columns of ``present``).

    Fixed by ``(config.seed, id)``; modalities outside the universe are never
    exposed; a view never exposes a modality the sample lacks.
    """
    present = np.asarray(present, dtype=bool)
    if present.shape != (len(ids), len(modalities)):
        raise ValueError(f"present: expected shape ({len(ids)}, {len(modalities)}), got {present.shape}")
    universe = resolve_universe(modalities, config)
    column = {name: index for index, name in enumerate(modalities)}
    candidates = np.zeros((0, len(modalities)), dtype=bool)
    for view in maximal_views(universe, [tuple(pair) for pair in config.withheld]):
        row = np.zeros(len(modalities), dtype=bool)
        row[[column[name] for name in view]] = True
        candidates = np.vstack([candidates, row])
    hashes = np.array([stable_hash(config.seed, sample_id) for sample_id in ids], dtype=np.uint64)
    views = np.zeros_like(present)
    patterns, inverse = np.unique(present, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for pattern_index, pattern in enumerate(patterns):
        restricted = np.unique(candidates & pattern, axis=0)
        # Keep the restricted views not strictly contained in another one.
        contained = (restricted[:, None, :] <= restricted[None, :, :]).all(-1)
        strictly = contained & ~np.eye(len(restricted), dtype=bool)
        choices = restricted[~strictly.any(1)]
        rows = np.flatnonzero(inverse == pattern_index)
        views[rows] = choices[(hashes[rows] % np.uint64(len(choices))).astype(np.int64)]
    return views


def cooccurrence(views: np.ndarray, modalities: list[str]) -> np.ndarray:
    """Counts ``[M, M]``: entry (i, j) = samples whose view exposes both i and j (diagonal: i alone)."""
    views = np.asarray(views, dtype=np.int64)
    if views.ndim != 2 or views.shape[1] != len(modalities):
        raise ValueError(f"views: expected shape (N, {len(modalities)}), got {views.shape}")
    return views.T @ views


def check_no_withheld(views: np.ndarray, modalities: list[str], withheld: list[tuple[str, str]]) -> None:
    """Raise ValueError if any sample's view exposes both modalities of a withheld pair."""
    counts = cooccurrence(views, modalities)
    for first, second in withheld:
        together = int(counts[modalities.index(first), modalities.index(second)])
        if together:
            raise ValueError(f"withheld pair {first}:{second} co-occurs in {together} training views")


def audit_text(views: np.ndarray, modalities: list[str], withheld: list[tuple[str, str]] = ()) -> str:
    """The co-occurrence matrix, per-modality counts and the distinct views, as a printable table."""
    views = np.asarray(views, dtype=bool)
    counts = cooccurrence(views, modalities)
    width = max(8, *(len(name) + 1 for name in modalities), len(str(len(views))) + 1)
    lines = [f"{len(views)} samples, co-occurrence (samples exposing both):"]
    lines.append(" " * width + "".join(f"{name:>{width}}" for name in modalities))
    for row, name in enumerate(modalities):
        lines.append(f"{name:<{width}}" + "".join(f"{int(value):>{width}}" for value in counts[row]))
    lines.append("samples per modality: "
                 + ", ".join(f"{name}={int(counts[i, i])}" for i, name in enumerate(modalities)))
    patterns, pattern_counts = np.unique(views, axis=0, return_counts=True)
    lines.append("distinct views:")
    for pattern, count in sorted(zip(patterns, pattern_counts, strict=True), key=lambda item: -item[1]):
        members = [name for name, on in zip(modalities, pattern, strict=True) if on] or ["(nothing)"]
        lines.append(f"  {int(count):>{width}}  {' '.join(members)}")
    for first, second in withheld:
        together = int(counts[modalities.index(first), modalities.index(second)])
        lines.append(f"withheld {first}:{second}: co-occur in {together} samples"
                     + ("" if together else " (ok)"))
    return "\n".join(lines)


def read_presence(shards: Path, split: str) -> tuple[list[str], list[str], np.ndarray]:
    """Sample ids, modalities and presence ``[N, M]`` of a complete token-shard folder.

    Through :func:`~pairless.data.shards.open_shards`, which refuses an incomplete or damaged folder.
    """
    data = open_shards(shards, split)
    modalities = list(data.specs)
    present = np.stack([np.asarray(data.present[name], dtype=bool) for name in modalities], axis=1)
    return list(data.ids), modalities, present


def audit(shards: Path, split: str, config: FragmentConfig) -> str:
    """The printable audit (:func:`audit_text`) of the views ``config`` gives the samples of a shard split."""
    ids, modalities, present = read_presence(shards, split)
    views = assign_views(ids, present, modalities, config)
    check_no_withheld(views, modalities, config.withheld)
    return audit_text(views, modalities, config.withheld)
