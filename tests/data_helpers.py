"""Small synthetic splits for the data-layer tests (no world renderer needed)."""

from __future__ import annotations

import numpy as np

from pairless.data import SplitData
from pairless.modalities import EMBED_DIM, SEMSEG_CLASSES


def make_split(count: int = 5, size: int = 8, seed: int = 0, prefix: str = "s") -> SplitData:
    """A split with all seven modalities; a few values are absent (fragmented data)."""
    rng = np.random.default_rng(seed)
    ids = [f"{prefix}{index:03d}" if index % 2 else f"sub/{prefix}{index:03d}" for index in range(count)]
    columns = {
        "rgb": rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
        "depth": rng.uniform(0.5, 9.0, (count, size, size)).astype(np.float32),
        "normal": rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
        "semseg": rng.integers(0, len(SEMSEG_CLASSES), (count, size, size), dtype=np.uint8),
        "det": [f"{index} 2 5 7 cube" for index in range(count)],
        "caption": [f"a red cube number {index}, ünïcode ok" for index in range(count)],
        "embed": rng.standard_normal((count, EMBED_DIM)).astype(np.float32),
    }
    present = {name: np.ones(count, dtype=bool) for name in columns}
    present["depth"][1] = False
    present["caption"][min(2, count - 1)] = False
    scenes = [{"objects": [{"shape": "cube", "index": index}]} for index in range(count)]
    return SplitData(ids=ids, columns=columns, present=present, scenes=scenes)
