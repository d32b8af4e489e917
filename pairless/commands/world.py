"""``pairless world``: render the built-in world and write it as a dataset (packed or folder form).

    pairless world --out data/world --num-scenes 2000 --size 32 --seed 0 --val-fraction 0.1

The same config into a complete folder is a no-op (exit 0); a different one is refused unless
``--overwrite`` (see :mod:`pairless.world.write`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pairless.config import ConfigError, validate
from pairless.world.write import WorldConfig, write_world


def build_parser() -> argparse.ArgumentParser:
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = validate(WorldConfig, {"num_scenes": args.num_scenes, "size": args.size, "seed": args.seed,
                                        "val_fraction": args.val_fraction, "format": args.format,
                                        "batch_size": args.batch_size}, prefix="world")
    except ConfigError as error:
        print(f"pairless world: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    started = time.perf_counter()
    try:
        splits = write_world(config, out, overwrite=args.overwrite)
    except (FileExistsError, RuntimeError) as error:
        print(f"pairless world: {error}", file=sys.stderr)
        return 1
    if splits is None:
        print(f"{out} is complete with this config; nothing to do (--overwrite to write it again)")
        return 0
    counts = ", ".join(f"{name} {len(split.ids)}" for name, split in splits.items())
    print(f"wrote {out} ({config.format}; {counts} scenes at {config.size}x{config.size}) "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
