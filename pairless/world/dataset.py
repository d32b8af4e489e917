"""``pairless world``: render the built-in world and write it as a dataset (packed or folder form).

    pairless world --out data/world --num-scenes 2000 --size 32 --seed 0 --val-fraction 0.1

A second run with the same config into a complete folder is a no-op (exit
0); a different config there is refused unless ``--overwrite``. A lock on
the folder keeps two processes from writing it at once; a run killed midway
leaves no partial dataset (the writer stages and publishes atomically).

Sample ids are zero-padded scene indices ("000123"); the train/val split is
a seeded random choice of ``round(num_scenes * val_fraction)`` validation
scenes. The resolved config is recorded in the dataset's manifest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from pairless.config import Config, ConfigError, validate

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
    from pairless.data import SplitData
    from pairless.world.samples import render_world

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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pairless world", description=__doc__.split("\n")[0])
    defaults = WorldConfig()
    parser.add_argument("--out", required=True, help="dataset folder to write")
    parser.add_argument("--num-scenes", type=int, default=defaults.num_scenes)
    parser.add_argument("--size", type=int, default=defaults.size, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    parser.add_argument("--format", default=defaults.format, help="packed (default, fast) or folder")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="scenes rendered at once")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing complete dataset")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = validate(WorldConfig, {"num_scenes": args.num_scenes, "size": args.size, "seed": args.seed,
                                        "val_fraction": args.val_fraction, "format": args.format,
                                        "batch_size": args.batch_size}, prefix="world")
    except ConfigError as error:
        print(f"pairless world: {error}", file=sys.stderr)
        return 2
    from pairless.data import write_dataset
    from pairless.storage import FolderLock

    record = {"generator": "pairless world", **config.model_dump(mode="json")}
    out = Path(args.out)
    try:
        with FolderLock(out):
            if not args.overwrite and already_written(out, record):
                print(f"{out} is complete with this config; nothing to do (--overwrite to write it again)")
                return 0
            started = time.perf_counter()
            splits = build_splits(config)
            root = write_dataset(out, splits, form=config.format, config=record, overwrite=args.overwrite)
    except (FileExistsError, RuntimeError) as error:
        print(f"pairless world: {error}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{name} {len(split.ids)}" for name, split in splits.items())
    print(f"wrote {root} ({config.format}; {counts} scenes at {config.size}x{config.size}) "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def already_written(out: Path, record: dict) -> bool:
    """True when ``out`` is a complete dataset of the same config; FileExistsError naming the first difference."""
    from pairless.storage import is_complete, read_json, reusable_output

    manifest_path = out / "manifest.json"
    found = read_json(manifest_path).get("config") if is_complete(out) and manifest_path.is_file() else None
    return reusable_output(out, record, found, what="a world", prefix="world.")
