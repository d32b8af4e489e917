"""``pairless audit``: print the modality co-occurrence of the fragmented training views of token shards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.commands.arguments import allowance_argument, pair_argument
from pairless.config import ConfigError, validate
from pairless.data import DataError
from pairless.training.fragment import FragmentConfig, audit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless audit", description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, type=Path, help="token-shard folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--withhold", action="append", type=pair_argument, default=[], metavar="A:B",
                        help="a pair that must never co-occur (repeatable)")
    parser.add_argument("--universe", default=None, help="comma-separated modalities used in training")
    parser.add_argument("--allow-pair", action="append", type=allowance_argument, default=[],
                        metavar="A:B=K", help="K samples keep both of the withheld pair A:B (repeatable)")
    parser.add_argument("--only-paired", action="store_true",
                        help="audit the allowed samples alone (the paired-only baseline's training set)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = validate(FragmentConfig, dict(
            universe=args.universe.split(",") if args.universe else None, withheld=args.withhold,
            seed=args.seed, allow_pairs=dict(args.allow_pair), only_paired=args.only_paired,
        ))
        text = audit(args.shards, args.split, config)
    except (ValueError, OSError, ConfigError, DataError) as error:
        print(f"pairless audit: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
