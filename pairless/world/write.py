"""The built-in world as a dataset: render it and write it (packed or folder form).

``write_world(WorldConfig(num_scenes=2000, size=32), out)`` is what ``pairless world``
runs. A second run with the same config into a complete folder is a no-op; a
different config there is refused unless ``overwrite``. A lock on
the folder keeps two processes from writing it at once; a run killed midway
leaves no partial dataset (the writer stages and publishes atomically).

Sample ids are zero-padded scene indices ("000123"); the train/val split is
a seeded random choice of ``round(num_scenes * val_fraction)`` validation
scenes. The resolved config is recorded in the dataset's manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from pairless.config import Config
from pairless.data import SplitData, write_dataset
from pairless.utils.storage import FolderLock, is_complete, read_json, reusable_output
from pairless.world.samples import render_world

SPLIT_STREAM = 0x5B11  # a second random stream of the seed, so the split does not shift the scenes


class WorldConfig(Config):
    """Everything that determines a rendered world dataset."""

    num_scenes: int = Field(2000, ge=1)
    size: int = Field(32, ge=8, le=512)
    seed: int = Field(0, ge=0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    format: Literal["packed", "folder"] = "packed"
    batch_size: int = Field(256, ge=1)


def split_indices(num_scenes: int, val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded train/val split of scene indices (each sorted); val is left out when empty."""
    num_val = int(round(num_scenes * val_fraction))
    if val_fraction > 0 and num_scenes >= 2:
        num_val = min(max(num_val, 1), num_scenes - 1)
    order = np.random.default_rng([seed, SPLIT_STREAM]).permutation(num_scenes)
    splits = {"train": np.sort(order[num_val:])}
    if num_val:
        splits["val"] = np.sort(order[:num_val])
    return splits


def build_splits(config: WorldConfig, progress: bool | None = None) -> dict:
    """Render the world of ``config`` and cut it into ``pairless.data.SplitData`` per split."""
    columns, scenes = render_world(config.num_scenes, config.size, config.seed, config.batch_size, progress)
    width = max(6, len(str(config.num_scenes - 1)))
    splits = {}
    for name, indices in split_indices(config.num_scenes, config.val_fraction, config.seed).items():
        split_columns = {
            modality: [values[i] for i in indices] if isinstance(values, list) else values[indices]
            for modality, values in columns.items()
        }
        splits[name] = SplitData(ids=[f"{i:0{width}d}" for i in indices], columns=split_columns,
                                 scenes=[scenes[i] for i in indices])
    return splits


def write_world(config: WorldConfig, out: Path, overwrite: bool = False) -> dict | None:
    """Render the world of ``config`` into the dataset folder ``out``; its splits, or None when ``out``
    already holds this very world (a different one there raises FileExistsError naming the field)."""
    record = {"generator": "pairless world", **config.model_dump(mode="json")}
    out = Path(out)
    with FolderLock(out):
        if not overwrite and already_written(out, record):
            return None
        splits = build_splits(config)
        write_dataset(out, splits, form=config.format, config=record, overwrite=overwrite)
    return splits


def already_written(out: Path, record: dict) -> bool:
    """True when ``out`` is a complete dataset of the same config; FileExistsError naming the first
    difference."""
    manifest_path = out / "manifest.json"
    found = read_json(manifest_path).get("config") if is_complete(out) and manifest_path.is_file() else None
    return reusable_output(out, record, found, what="a world", prefix="world.")
