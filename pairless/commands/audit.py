"""``pairless audit``: print the modality co-occurrence of the fragmented training views of token shards."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.config import ConfigError
from pairless.data import DataError
from pairless.modalities import parse_pair
from pairless.training.fragment import FragmentConfig, audit


def pair_argument(text: str) -> tuple[str, str]:
    """argparse ``type=`` for ``A:B`` (the message of a bad one is kept)."""
    try:
        return parse_pair(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless audit", description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, type=Path, help="token-shard folder")
    parser.add_argument("--split", default="train")
    parser.add_argument("--withhold", action="append", type=pair_argument, default=[], metavar="A:B",
                        help="a pair that must never co-occur (repeatable)")
    parser.add_argument("--universe", default=None, help="comma-separated modalities used in training")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = FragmentConfig(
            universe=args.universe.split(",") if args.universe else None, withheld=args.withhold,
            seed=args.seed,
        )
        text = audit(args.shards, args.split, config)
    except (ValueError, OSError, ConfigError, DataError) as error:
        print(f"pairless audit: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
