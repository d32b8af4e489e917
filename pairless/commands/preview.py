"""``pairless preview``: a grid of samples, one row per sample, one column per modality."""

from __future__ import annotations

import argparse
import sys

from pairless.data import DataError, open_dataset
from pairless.inference.figures import write_preview


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless preview", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="dataset folder (packed or folder form)")
    parser.add_argument("--split", default="val", help="split to draw (default: val)")
    parser.add_argument("--out", required=True, help="output PNG path")
    parser.add_argument("--num", type=int, default=8, help="number of samples (rows), default 8")
    parser.add_argument("--start", type=int, default=0, help="index of the first sample")
    parser.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                        help="what to do with unreadable or invalid files (default: error)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        dataset = open_dataset(args.dataset, args.split, on_bad_sample=args.on_bad_sample)
        width, height = write_preview(dataset, args.out, num=args.num, start=args.start)
    except (DataError, ValueError, KeyError) as error:
        print(f"pairless preview: {error}", file=sys.stderr)
        return 1
    if dataset.bad_samples:
        print(f"skipped {len(dataset.bad_samples)} bad value(s), e.g. {dataset.bad_samples[0][0]}: "
              f"{dataset.bad_samples[0][1]}", file=sys.stderr)
    print(f"wrote {args.out} ({width}x{height} px, {min(args.num, len(dataset) - args.start)} samples, "
          f"modalities: {', '.join(dataset.modalities)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
