"""``pairless eval RUN --directions rgb:depth,rgb+normal:depth``: translation cross-entropy per direction.

Writes ``RUN/eval.json`` (merged with directions evaluated before) and prints a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.inference.evaluate import evaluate_directions, format_table, record_results
from pairless.utils.threads import choose_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path,
                        help="training run folder (holds config.json and model.safetensors)")
    parser.add_argument("--directions", required=True,
                        help="comma-separated src[+src]:dst, e.g. rgb:depth,depth:rgb")
    parser.add_argument("--num-samples", type=int, default=2500)
    parser.add_argument("--split", default="val")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--shards", type=Path, default=None, help="token shards (default: the run's own)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    directions = [text.strip() for text in args.directions.split(",") if text.strip()]
    try:
        results = evaluate_directions(args.run, directions, args.num_samples, args.batch_size, args.split,
                                      args.shards, threads=choose_threads())
    except (ValueError, FileNotFoundError) as error:
        print(f"pairless eval: {error}", file=sys.stderr)
        return 2
    output = record_results(args.run, results)
    print(format_table(results))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
