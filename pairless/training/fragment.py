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

A withheld pair can be *allowed* in exactly ``k`` samples (``allow_pairs``, the few-shot
setting of the pairs-curve recipe): among the samples that have both modalities, the
``k`` with the smallest stable hash of ``(seed, pair, sample id)`` keep both (their view
is a maximal one of the universe without that pair's conflict), so the chosen samples
of a smaller ``k`` are among those of a larger one, and every other sample keeps the
view it has without the allowance. ``only_paired`` trains on the chosen samples alone.

``pairless audit`` prints the resulting co-occurrence matrix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationInfo, field_validator, model_validator

from pairless.config import Config, ConfigError
from pairless.data.shards import open_shards
from pairless.modalities import parse_pair


class FragmentConfig(Config):
    """Which modalities take part in training and which pairs never co-occur."""

    universe: list[str] | None = None  # modalities used in training; None = every modality in the shards
    withheld: list[tuple[str, str]] = []  # pairs that must never appear together in a training sample
    seed: int = 0
    # "a:b" -> k: exactly k samples that have both keep both (a withheld pair, k >= 0; k = 0 is no allowance)
    allow_pairs: dict[str, int] = {}
    only_paired: bool = False  # train on the allowed samples alone (the paired-only baseline)

    @field_validator("allow_pairs")
    @classmethod
    def _allowances_name_withheld_pairs(cls, value: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        withheld = {frozenset(pair): tuple(pair) for pair in info.data.get("withheld", [])}
        allowed: dict[str, int] = {}
        for key, count in value.items():
            try:
                pair = parse_pair(key)
            except ValueError as error:
                raise ValueError(f"fragment.allow_pairs: {error}") from None
            if frozenset(pair) not in withheld:
                named = ", ".join(f"{a}:{b}" for a, b in withheld.values()) or "none"
                raise ValueError(f"fragment.allow_pairs: {key} is not a withheld pair (withheld: {named})")
            if count < 0:
                raise ValueError(f"fragment.allow_pairs: {key} = {count}; a count of samples must be >= 0")
            canonical = ":".join(withheld[frozenset(pair)])  # in the order of fragment.withheld
            if canonical in allowed:
                raise ValueError(f"fragment.allow_pairs: pair {canonical} is given twice")
            allowed[canonical] = count
        # k = 0 allows nothing: dropped, so that it is the same config (and cached run) as no allowance
        return {key: count for key, count in allowed.items() if count > 0}

    @model_validator(mode="after")
    def _only_paired_needs_pairs(self) -> FragmentConfig:
        if self.only_paired and not self.allow_pairs:
            raise ValueError("fragment.only_paired: needs fragment.allow_pairs with a count above 0 (the "
                             "samples to train on)")
        return self


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


def allowed_pair_ids(ids: list[str], present: np.ndarray, modalities: list[str],
                     config: FragmentConfig) -> dict[str, list[str]]:
    """Per ``config.allow_pairs`` key: the ids (sorted) of the k samples that keep both modalities.

    Among the samples that have both, the k with the smallest stable hash of ``(seed, pair, id)``: the
    same in every process and whatever the order of ``ids``; a smaller k chooses a subset of a larger
    one's. Raises ConfigError naming the key when k exceeds the samples that have both.
    """
    present = np.asarray(present, dtype=bool)
    resolve_universe(modalities, config)  # the pairs must name modalities of the data
    chosen = {}
    for key, count in config.allow_pairs.items():
        first, second = parse_pair(key)
        has_both = present[:, modalities.index(first)] & present[:, modalities.index(second)]
        eligible = [ids[row] for row in np.flatnonzero(has_both)]
        if count > len(eligible):
            raise ConfigError(f"fragment.allow_pairs: {key} = {count} is more than the {len(eligible)} "
                              f"samples that have both {first} and {second}")
        ranked = sorted(eligible, key=lambda sample_id: (stable_hash(config.seed, f"{key}/{sample_id}"),
                                                          sample_id))
        chosen[key] = sorted(ranked[:count])
    return chosen


def _candidate_views(universe: list[str], withheld: list[tuple[str, str]], granted: list[tuple[str, str]],
                     column: dict[str, int], width: int) -> np.ndarray:
    """Rows ``[V, width]``: the maximal views of a sample allowed the ``granted`` pairs (keeping both)."""
    kept = {frozenset(pair) for pair in granted}
    required = {name for pair in granted for name in pair}
    views = [view for view in maximal_views(universe, [p for p in withheld if frozenset(p) not in kept])
             if required <= view]
    if not views:
        named = ", ".join(f"{a}:{b}" for a, b in granted)
        raise ConfigError(f"fragment.allow_pairs: no view keeps all of {named} together (another withheld "
                          "pair separates them); allow them in different samples")
    rows = np.zeros((len(views), width), dtype=bool)
    for index, view in enumerate(views):
        rows[index, [column[name] for name in view]] = True
    return rows


def assign_views(ids: list[str], present: np.ndarray, modalities: list[str],
                 config: FragmentConfig) -> np.ndarray:
    """The view of each sample: bool ``[N, M]`` over ``modalities`` (columns of ``present``).

    Fixed by ``(config.seed, id)``; modalities outside the universe are never
    exposed; a view never exposes a modality the sample lacks. The samples
    :func:`allowed_pair_ids` chooses keep both modalities of their pair.
    """
    present = np.asarray(present, dtype=bool)
    if present.shape != (len(ids), len(modalities)):
        raise ValueError(f"present: expected shape ({len(ids)}, {len(modalities)}), got {present.shape}")
    universe = resolve_universe(modalities, config)
    column = {name: index for index, name in enumerate(modalities)}
    withheld = [tuple(pair) for pair in config.withheld]
    # Which allowances each sample holds, as a bit mask over the allow_pairs keys (0: none).
    keys = list(config.allow_pairs)
    row_of = {sample_id: row for row, sample_id in enumerate(ids)}
    grants = np.zeros(len(ids), dtype=np.int64)
    chosen = allowed_pair_ids(ids, present, modalities, config)
    for bit, key in enumerate(keys):
        for sample_id in chosen[key]:
            grants[row_of[sample_id]] |= 1 << bit
    hashes = np.array([stable_hash(config.seed, sample_id) for sample_id in ids], dtype=np.uint64)
    views = np.zeros_like(present)
    for grant in np.unique(grants):
        granted = [parse_pair(key) for bit, key in enumerate(keys) if int(grant) >> bit & 1]
        candidates = _candidate_views(universe, withheld, granted, column, len(modalities))
        granted_rows = np.flatnonzero(grants == grant)
        patterns, inverse = np.unique(present[granted_rows], axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        for pattern_index, pattern in enumerate(patterns):
            restricted = np.unique(candidates & pattern, axis=0)
            # Keep the restricted views not strictly contained in another one.
            contained = (restricted[:, None, :] <= restricted[None, :, :]).all(-1)
            strictly = contained & ~np.eye(len(restricted), dtype=bool)
            choices = restricted[~strictly.any(1)]
            rows = granted_rows[inverse == pattern_index]
            views[rows] = choices[(hashes[rows] % np.uint64(len(choices))).astype(np.int64)]
    return views


def cooccurrence(views: np.ndarray, modalities: list[str]) -> np.ndarray:
    """Counts ``[M, M]``: entry (i, j) = samples whose view exposes both i and j (diagonal: i alone)."""
    views = np.asarray(views, dtype=np.int64)
    if views.ndim != 2 or views.shape[1] != len(modalities):
        raise ValueError(f"views: expected shape (N, {len(modalities)}), got {views.shape}")
    return views.T @ views


def check_no_withheld(views: np.ndarray, modalities: list[str], withheld: list[tuple[str, str]],
                      allowed: dict[str, np.ndarray] | None = None) -> None:
    """Raise ValueError if a sample's view exposes both modalities of a withheld pair.

    ``allowed``: ``"a:b"`` -> bool ``[N]`` of the samples allowed to expose both (``allow_pairs``);
    the pair must then co-occur in exactly those samples, no others.
    """
    views = np.asarray(views, dtype=bool)
    for first, second in withheld:
        together = views[:, modalities.index(first)] & views[:, modalities.index(second)]
        mask = _allowance(allowed or {}, first, second)
        if mask is None:
            if together.any():
                raise ValueError(f"withheld pair {first}:{second} co-occurs in {int(together.sum())} "
                                 "training views")
            continue
        mask = np.asarray(mask, dtype=bool)
        if (together & ~mask).any():
            raise ValueError(f"withheld pair {first}:{second} co-occurs in {int((together & ~mask).sum())} "
                             f"training views outside the {int(mask.sum())} allowed samples")
        if (mask & ~together).any():
            raise ValueError(f"withheld pair {first}:{second}: {int((mask & ~together).sum())} of the "
                             f"{int(mask.sum())} allowed samples do not expose both")


def _allowance(allowed: dict, first: str, second: str):
    """The entry of ``allowed`` for the pair, whichever order its key names it in (None if absent)."""
    for key in (f"{first}:{second}", f"{second}:{first}"):
        if key in allowed:
            return allowed[key]
    return None


def audit_text(views: np.ndarray, modalities: list[str], withheld: list[tuple[str, str]] = (),
               allowed: dict[str, int] | None = None) -> str:
    """The co-occurrence matrix, per-modality counts and the distinct views, as a printable table.

    ``allowed``: ``"a:b"`` -> the number of samples allowed to expose both (``allow_pairs``).
    """
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
        allowance = _allowance(allowed or {}, first, second)
        if allowance is not None:
            note = f" (allowed: {allowance})"
        else:
            note = "" if together else " (ok)"
        lines.append(f"withheld {first}:{second}: co-occur in {together} samples{note}")
    return "\n".join(lines)


@dataclass
class Fragmented:
    """The training samples and their views under a FragmentConfig (what training and the audit use)."""

    rows: np.ndarray  # int [N']: the samples trained on (all, or with only_paired the allowed ones)
    views: np.ndarray  # bool [N', M]: the view of each of them, over the modalities given
    paired_ids: dict[str, list[str]]  # "a:b" -> ids of the samples allowed to keep both (allow_pairs)


def fragment_samples(ids: list[str], present: np.ndarray, modalities: list[str],
                     config: FragmentConfig) -> Fragmented:
    """Assign every sample its view, check the withheld pairs (and their allowances), apply only_paired."""
    views = assign_views(ids, present, modalities, config)
    paired = allowed_pair_ids(ids, present, modalities, config)
    row_of = {sample_id: row for row, sample_id in enumerate(ids)}
    masks = {}
    for key, chosen in paired.items():
        masks[key] = np.zeros(len(ids), dtype=bool)
        masks[key][[row_of[sample_id] for sample_id in chosen]] = True
    check_no_withheld(views, modalities, [tuple(pair) for pair in config.withheld], masks)
    rows = np.arange(len(ids))
    if config.only_paired:
        rows = np.flatnonzero(np.logical_or.reduce(list(masks.values())))
    return Fragmented(rows=rows, views=views[rows], paired_ids=paired)


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
    fragmented = fragment_samples(ids, present, modalities, config)
    text = audit_text(fragmented.views, modalities, config.withheld, config.allow_pairs)
    if config.only_paired:
        text += f"\nonly_paired: {len(fragmented.rows)} of the {len(ids)} samples are trained on"
    return text
