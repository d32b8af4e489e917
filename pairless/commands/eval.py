"""``pairless eval RUN --directions rgb:depth,rgb+normal:depth``: translation cross-entropy per direction.

Writes ``RUN/eval.json`` (merged with directions evaluated before) and prints a table. A direction that no
sample of the split can score (a pair never recorded together) is listed as skipped with the reason; the
exit status is non-zero only when nothing could be evaluated, or with ``--strict``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.commands.runtime import add_runtime_arguments, resolve_runtime
from pairless.inference.evaluate import evaluate_directions, format_table, record_results
from pairless.inference.known import know_modalities
from pairless.inference.regions import evaluate_regions, format_regions
from pairless.modalities import Direction


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
    parser.add_argument("--regions", action="store_true",
                        help="also split the CE of image destinations into object and background tokens "
                             "(object mask from the samples' semseg tokens; needs semseg in the shards)")
    parser.add_argument("--tokenizers", type=Path, default=None,
                        help="tokenizer folder for --regions (default: the shards')")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when any direction is skipped (default: only when all are)")
    add_runtime_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    directions = [text.strip() for text in args.directions.split(",") if text.strip()]
    skipped: dict[str, str] = {}
    try:
        runtime = resolve_runtime(args)
        know_modalities(args.run, shards=args.shards, tokenizers=args.tokenizers)
        results = evaluate_directions(args.run, directions, args.num_samples, args.batch_size, args.split,
                                      args.shards, threads=runtime.threads, device=runtime.device,
                                      skipped=skipped)
        regions = {}
        if args.regions and results:
            regions = evaluate_regions(args.run, list(results), args.tokenizers, args.num_samples,
                                       args.batch_size, args.split, args.shards, threads=runtime.threads,
                                       device=runtime.device)
    except (ValueError, FileNotFoundError) as error:
        print(f"pairless eval: {error}", file=sys.stderr)
        return 2
    for direction, reason in skipped.items():
        parsed = Direction.parse(direction)
        print(f"pairless eval: {direction}: skipped, {reason}: no ground truth to score it against "
              f"(`pairless generate RUN --from {parsed.source} --to {parsed.destination}` still translates "
              "it)",
              file=sys.stderr)
    if not results:
        print("pairless eval: no direction could be evaluated", file=sys.stderr)
        return 2
    if args.regions and not regions:
        print("pairless eval: --regions: no direction into an image modality with semseg in the shards; "
              "nothing split", file=sys.stderr)
    for direction, split in regions.items():
        results[direction]["regions"] = split
    output = record_results(args.run, results)
    print(format_table(results))
    if regions:
        print(format_regions(regions))
    print(f"wrote {output}")
    if skipped and args.strict:
        print(f"pairless eval: --strict: {len(skipped)} of {len(directions)} directions skipped",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
