"""``pairless import-4m-data ROOT --out SHARDS``: a dataset pre-tokenized for ml-4m as pairless token shards.

ROOT is ml-4m's layout (its README_DATA): one folder per modality (``tok_rgb@224``, ``caption``, ``det``...),
tar shards or plain files, in ROOT itself or in split folders under it (``train/``, ``val/``). Image tokens
are read as they are (crop 0 of each int16 ``.npy``); captions and boxes are tokenized with ml-4m's WordPiece
file (``--text-tokenizer``). The shards have the TokenSpecs of an imported ml-4m checkpoint (same mapping
file as ``pairless import-4m``), so audit, train, eval, probe and generate read them. See docs/ml4m.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.config import ConfigError
from pairless.data.validate import DataError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless import-4m-data", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="ml-4m dataset folder (modality folders, or split folders)")
    parser.add_argument("--out", type=Path, required=True, help="token shard folder to write")
    parser.add_argument("--modalities", type=Path, default=None,
                        help="modality mapping file (default: pairless/model/ml4m_modalities.json)")
    parser.add_argument("--text-tokenizer", type=Path, default=None,
                        help="ml-4m's WordPiece tokenizer.json (text_tokenizer_4m_wordpiece_30k.json); "
                             "needed for caption and det")
    parser.add_argument("--folder", action="append", default=[], metavar="FOLDER=MODALITY",
                        help="a modality folder named otherwise than its ml-4m modality (ml-4m's "
                             "modality_name_map), e.g. rgb_dvae_BUa_224=tok_rgb@224; repeatable")
    parser.add_argument("--split", default="train",
                        help="the split's name when ROOT itself holds the modality folders (default: train)")
    parser.add_argument("--image-folder", default="rgb",
                        help="raw images giving the original size, with crop_settings, to move det boxes "
                             "into crop 0 (default: rgb)")
    parser.add_argument("--format", choices=("packed", "webdataset"), default="packed",
                        help="packed: memory-mapped .npy per split and modality; webdataset: tar shards per "
                             "modality (as pairless tokenize writes them)")
    parser.add_argument("--shard-samples", type=int, default=1000, help="webdataset: samples per tar shard")
    parser.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                        help="a member that cannot be read: stop naming its shard and key (error), or leave "
                             "that modality absent for its sample and list it in the manifest's bad_samples "
                             "(skip)")
    parser.add_argument("--overwrite", action="store_true", help="replace complete shards at --out")
    return parser


def _folders(items: list[str]) -> dict[str, str]:
    folders = {}
    for item in items:
        folder, equals, modality = item.partition("=")
        if not equals or not folder or not modality:
            raise ValueError(f"--folder {item!r}: expected FOLDER=MODALITY "
                             "(e.g. rgb_dvae_BUa_224=tok_rgb@224)")
        folders[folder] = modality
    return folders


def main(argv: list[str] | None = None) -> int:
    from pairless.config import validate
    from pairless.tokenizers.ml4m_data import Ml4mDataConfig, import_ml4m_data

    args = build_parser().parse_args(argv)
    try:
        config = validate(Ml4mDataConfig, {
            "root": args.root, "out": args.out, "mapping": args.modalities,
            "text_tokenizer": args.text_tokenizer,
            "folders": _folders(args.folder), "split": args.split, "image_folder": args.image_folder,
            "on_bad_sample": args.on_bad_sample, "format": args.format, "shard_samples": args.shard_samples,
            "overwrite": args.overwrite})
        summary = import_ml4m_data(config)
    except (ValueError, FileNotFoundError, FileExistsError, DataError, ConfigError) as error:
        print(f"pairless import-4m-data: {error}", file=sys.stderr)
        return 1
    names = ", ".join(f"{ml4m} -> {name}" for name, ml4m in summary["modalities"].items())
    print(f"imported {args.root}: {names}")
    for split, count in summary["splits"].items():
        present = ", ".join(f"{name} {number}" for name, number in summary["present"][split].items())
        print(f"  {split}: {count} samples ({present})")
    skipped = f"; {summary['bad']} bad member(s) left out" if summary["bad"] else ""
    print(f"wrote {args.out} in {summary['seconds']:.1f}s{skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
