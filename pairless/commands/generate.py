"""``pairless generate``: generate with one or more trained runs, decode, score, and draw the study's grid.

Writes the output folder described in :mod:`pairless.inference.translations` and prints each run's metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.commands.runtime import add_runtime_arguments, resolve_runtime
from pairless.config import ConfigError, apply_overrides
from pairless.inference.evaluate import run_shards_path
from pairless.inference.generate import default_schedule, schedule_preset
from pairless.inference.known import know_modalities
from pairless.inference.translations import generate_and_score, tokenizers_of
from pairless.modalities import get, parse_chain


def parse_runs(first: Path, extra: str | None) -> dict[str, Path]:
    """``--runs zs=runs/zs,ms=runs/ms`` as {name: folder}; without it, the positional run alone."""
    if not extra:
        return {first.name: first}
    runs = {}
    for item in extra.split(","):
        if "=" not in item:
            raise ValueError(f"--runs {item!r}: expected name=RUN, e.g. zs=runs/zs,ms=runs/ms")
        name, path = item.split("=", 1)
        runs[name.strip()] = Path(path.strip())
    return runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a training run folder (its shards are used by default)")
    parser.add_argument("--from", dest="src", required=True, help="source modality, or a+b")
    parser.add_argument("--to", dest="dst", required=True,
                        help="destination modality, or a chain normal:depth")
    parser.add_argument("--num", type=int, default=8, help="samples to generate and score")
    parser.add_argument("--schedule", default=None, help="a preset name (default: the study's for the kind)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="schedule override, e.g. --set temperature=0.5")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--runs", default=None, help="several runs side by side: name=RUN,name=RUN")
    parser.add_argument("--tokenizers", type=Path, default=None,
                        help="tokenizer folder (default: the shards')")
    parser.add_argument("--shards", type=Path, default=None)
    parser.add_argument("--split", default="val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--figure-rows", type=int, default=None)
    add_runtime_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        runtime = resolve_runtime(args)
        runs = parse_runs(args.run, args.runs)
        know_modalities(*runs.values(), shards=args.shards, tokenizers=args.tokenizers)
        shards = args.shards or run_shards_path(args.run)
        tokenizers = args.tokenizers or tokenizers_of(shards)
        final = parse_chain(f"{args.src}:{args.dst}")[-1][0]
        schedule = schedule_preset(args.schedule) if args.schedule else default_schedule(get(final).kind)
        schedule = apply_overrides(schedule, args.overrides)
        result = generate_and_score(runs, args.src, args.dst, schedule, args.num, tokenizers, shards,
                                    args.out, args.figure_rows, args.split, args.seed, args.batch_size,
                                    threads=runtime.threads, device=runtime.device)
    except (ValueError, FileNotFoundError, KeyError, ConfigError) as error:
        print(f"pairless generate: {error}", file=sys.stderr)
        return 2
    no_truth = result["metrics"].get("_no_ground_truth")
    if no_truth:
        print(f"pairless generate: {args.src} -> {args.dst}: {no_truth}; the figure shows the translations "
              "beside their inputs", file=sys.stderr)
    for name, values in result["metrics"].items():
        if not name.startswith("_") and values:
            print(f"{name:<16} " + "  ".join(f"{key}={value:.4f}" for key, value in values.items()))
    print(f"wrote {result['out']} (figure: {result['figure']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
