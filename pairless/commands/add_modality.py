"""``pairless add-modality BASE --modality normal --anchor rgb --out DIR``: add a modality to a trained model.

Only the new modality's own weights are trained (token rows, modality embedding, output head; low-rank with
``--set rank=R``), on the samples that pair it with the anchor; every weight of BASE stays frozen. The work
is :func:`pairless.training.adapter.add_modality`; OUT is a run folder that ``pairless eval``, ``probe`` and
``generate`` read like any other.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.commands.runtime import add_runtime_arguments
from pairless.config import ConfigError, apply_overrides, validate
from pairless.inference.evaluate import run_shards_path
from pairless.inference.known import know_modalities
from pairless.training.adapter import AdapterConfig, add_modality, base_paths, resolve_config
from pairless.training.run import TrainingDiverged
from pairless.utils.runtime import Runtime
from pairless.utils.storage import read_json
from pairless.utils.threads import torch_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless add-modality", description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="the base run folder (or its model.safetensors)")
    parser.add_argument("--shards", type=Path,
                        help="token shards holding the new modality (default: the base run's own)")
    parser.add_argument("--modality", required=True, help="the modality to add")
    parser.add_argument("--anchor", required=True,
                        help="a modality of the base model; training uses the samples that have both")
    parser.add_argument("--out", type=Path, required=True, help="output folder (a run folder)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any AdapterConfig field, e.g. --set rank=16 --set structure_weight=1")
    add_runtime_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> AdapterConfig:
    """Flags, then ``--set`` overrides; the shards default to the base run's (its config.json), and so does
    the masking."""
    shards = args.shards
    if shards is None:
        _, run = base_paths(args.base)
        if run is None:
            raise ConfigError(f"shards: {args.base} has no run config.json beside it to take the shards "
                              "from; pass --shards")
        shards = run_shards_path(run)
    data = {"base": str(args.base), "shards": str(shards), "out": str(args.out), "modality": args.modality,
            "anchor": args.anchor}
    # resolved first, so that --set masking.input_budget=... finds the masking section (the base run's)
    config = apply_overrides(resolve_config(validate(AdapterConfig, data)), args.set)
    # --threads, else --set threads=N, else the default; --device, else --set device=..., else auto. Both
    # are written into OUT/config.json as resolved.
    runtime = Runtime.resolve(args.threads if args.threads is not None else config.threads,
                              args.device or config.device)
    return config.model_copy(update={"threads": runtime.threads, "device": str(runtime.device)})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        know_modalities(args.base, shards=args.shards)
        config = config_from_args(args)
        with torch_threads(config.threads):
            out = add_modality(config)
    except (TrainingDiverged, ConfigError, ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"pairless add-modality: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    record = read_json(out / "COMPLETE.json")
    print(f"trainable parameters: {record['trainable_parameters']:,} "
          f"({record['trainable_fraction']:.2%} of {record['model_parameters']:,}); "
          f"final loss {record['final_loss']:.4f}; frozen weights unchanged: "
          f"{record['frozen_hash'] == record['base_hash']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
