"""``pairless tokenize``: turn every split of a dataset into token shards with trained tokenizers."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pairless.commands.runtime import add_runtime_arguments, resolve_runtime
from pairless.data.streamed_shards import write_streamed
from pairless.data.validate import DataError
from pairless.tokenizers.encode_dataset import write_token_shards
from pairless.utils.storage import is_complete


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
    parser.add_argument("--format", choices=("packed", "webdataset"), default="packed",
                        help="packed: memory-mapped .npy per split and modality; webdataset: tar shards per "
                             "modality that training streams shard by shard (with --set data_order=shards)")
    parser.add_argument("--shard-samples", type=int, default=1000,
                        help="webdataset: samples per tar shard")
    parser.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                        help="a bad file: stop naming it (error), or mark that modality absent for its "
                             "sample, count it and list it in the shards' manifest under bad_samples (skip)")
    add_runtime_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runtime = resolve_runtime(args)
        if args.format == "webdataset" and is_complete(args.out) and not args.overwrite:
            written = False
        else:
            # webdataset: tokenized as packed first (beside --out), then written as tars
            target = args.out if args.format == "packed" else args.out.with_name(args.out.name + ".packed")
            written = write_token_shards(args.data, args.tokenizers, target, args.batch_size,
                                         overwrite=args.overwrite, truncate_text=args.truncate_text,
                                         threads=runtime.threads, on_bad_sample=args.on_bad_sample,
                                         device=runtime.device)
            if args.format == "webdataset":
                if args.out.exists():  # an incomplete one (killed), or --overwrite
                    shutil.rmtree(args.out)
                write_streamed(target, args.out, args.shard_samples)
                shutil.rmtree(target)
                written = True
    except (ValueError, KeyError, FileExistsError, FileNotFoundError, RuntimeError, DataError) as error:
        print(f"pairless tokenize: {error}", file=sys.stderr)
        return 1
    if not written:
        print(f"{args.out} is complete with these data and tokenizers; nothing to do "
              "(--overwrite to redo it)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
