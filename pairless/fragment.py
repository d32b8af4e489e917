"""Fragmentation: which modalities each training sample exposes (its *view*).

(Skeleton: the helper that owns this file implements assign_views, the audit and `pairless audit`.)
"""

from __future__ import annotations

from pairless.config import Config


class FragmentConfig(Config):
    """Which modalities take part in training and which pairs never co-occur."""

    universe: list[str] | None = None  # modalities used in training; None = every modality in the shards
    withheld: list[tuple[str, str]] = []  # pairs that must never appear together in a training sample
    seed: int = 0
