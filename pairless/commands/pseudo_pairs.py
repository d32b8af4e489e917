"""``pairless pseudo-pairs RUN --direction rgb:depth --out SHARDS``: fill a withheld pair with the run's own
translations (LoReTTa-style transitive pseudo-pairs; :mod:`pairless.experiments.pseudo_pairs`).

Writes token shards in which every training sample that exposes rgb but not depth carries a generated
depth, marked as model-generated; then continue the run on them::

    pairless train --shards SHARDS --init-from RUN --out RUN2 --withhold rgb:depth ...

``pairless audit --shards SHARDS --withhold rgb:depth`` shows that no sample pairs real rgb with real depth.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pairless.commands.runtime import add_runtime_arguments, resolve_runtime
from pairless.config import ConfigError, validate
from pairless.data.validate import DataError
from pairless.experiments.pseudo_pairs import PseudoPairsConfig, format_summary, make_pseudo_pairs
from pairless.inference.generate import PRESETS as SCHEDULES
from pairless.inference.known import know_modalities


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless pseudo-pairs", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path,
                        help="a zero-shot training run folder (model.safetensors, config.json)")
    parser.add_argument("--direction", required=True, metavar="A:B",
                        help="generate B for the training samples that expose A but not B (a withheld pair)")
    parser.add_argument("--out", type=Path, required=True, help="the new token-shard folder")
    parser.add_argument("--via", help="chain through this binding modality (A -> VIA -> B)")
    parser.add_argument("--schedule", default="roar1", help=f"generation preset: {', '.join(SCHEDULES)}")
    parser.add_argument("--threshold", type=float, default=None,
                        help="keep samples whose consistency (1 - CE(real A | generated B) / CE(real A | "
                             "nothing)) is at least this; default: keep all")
    parser.add_argument("--keep-fraction", type=float, default=None,
                        help="instead of --threshold: keep this fraction of the samples, the most consistent")
    parser.add_argument("--max-samples", type=int, default=None, help="fill at most this many samples")
    parser.add_argument("--shards", type=Path, default=None, help="token shards (default: the run's own)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    add_runtime_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        know_modalities(args.run, shards=args.shards)
        # paths as given, resolved against the current directory: the new shards record them
        config = validate(PseudoPairsConfig, {
            "run": os.path.abspath(args.run), "out": os.path.abspath(args.out), "direction": args.direction,
            "via": args.via, "schedule": args.schedule, "threshold": args.threshold,
            "keep_fraction": args.keep_fraction, "max_samples": args.max_samples,
            "shards": os.path.abspath(args.shards) if args.shards else None, "batch_size": args.batch_size,
            "seed": args.seed})
        runtime = resolve_runtime(args)
        summary = make_pseudo_pairs(config, threads=runtime.threads, device=runtime.device)
    except (ConfigError, DataError, ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"pairless pseudo-pairs: {error}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    print(f"wrote {args.out}; continue training with: pairless train --shards {args.out} --init-from "
          f"{args.run} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
