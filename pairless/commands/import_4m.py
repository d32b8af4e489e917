"""``pairless import-4m CHECKPOINT --out RUN``: an ml-4m checkpoint (safetensors, config in its metadata) as
a pairless run folder that eval, generate, probe, add-modality and explore read like a trained run.

Modality names are translated by pairless/model/ml4m_modalities.json (``tok_rgb@224`` -> ``rgb``...) or
the file given with ``--modalities``. Inputs pairless cannot take (raw pixels ``rgb@224``, T5 embeddings
``t5_caption``) are refused by name unless left out with ``--skip``. See docs/ml4m.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.training.imported import import_checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless import-4m", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path,
                        help="ml-4m model.safetensors (e.g. a released 4M-7 or 4M-21)")
    parser.add_argument("--out", type=Path, required=True, help="run folder to write")
    parser.add_argument("--modalities", type=Path, default=None,
                        help="modality mapping file (default: pairless/model/ml4m_modalities.json)")
    parser.add_argument("--skip", action="append", default=[],
                        help="an input modality to leave out (rgb@224, t5_caption: pairless takes tokens "
                             "only); repeatable")
    parser.add_argument("--shards", type=Path, default=None,
                        help="token shards made with the checkpoint's tokenizers: the run's default data")
    parser.add_argument("--overwrite", action="store_true", help="replace a complete --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        record = import_checkpoint(args.checkpoint, args.out, args.modalities, tuple(args.skip), args.shards,
                                   args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"pairless import-4m: {error}", file=sys.stderr)
        return 2
    names = ", ".join(f"{ml4m} -> {name}" for name, ml4m in record["modalities"].items())
    skipped = f"; left out: {', '.join(record['skipped'])}" if record["skipped"] else ""
    print(f"imported {args.checkpoint} ({record['parameters']:,} parameters): {names}{skipped}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
