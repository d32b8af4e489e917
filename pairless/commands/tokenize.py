"""``pairless tokenize``: turn every split of a dataset into token shards with trained tokenizers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.tokenizers.shards import write_token_shards
from pairless.utils.threads import choose_threads


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless tokenize", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (splits train/, val/, ...)")
    parser.add_argument("--tokenizers", required=True, type=Path, help="trained tokenizer folder TOKDIR")
    parser.add_argument("--out", required=True, type=Path, help="token shard folder SHARDS")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="samples encoded at once (ids do not depend on it)")
    parser.add_argument("--truncate-text", action="store_true",
                        help="cut texts longer than their tokenizer's padded length instead of stopping")
    parser.add_argument("--overwrite", action="store_true", help="replace complete shards at --out")
    parser.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                        help="a bad file: stop naming it (error), or mark that modality absent for its "
                             "sample, count it and list it in the shards' manifest under bad_samples (skip)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = write_token_shards(args.data, args.tokenizers, args.out, args.batch_size,
                                     overwrite=args.overwrite, truncate_text=args.truncate_text,
                                     threads=choose_threads(), on_bad_sample=args.on_bad_sample)
    except (ValueError, KeyError, FileExistsError, FileNotFoundError, RuntimeError) as error:
        print(f"pairless tokenize: {error}", file=sys.stderr)
        return 1
    if not written:
        print(f"{args.out} is complete with these data and tokenizers; nothing to do "
              "(--overwrite to redo it)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
