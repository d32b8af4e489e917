"""``pairless report RESULTS/RECIPE``: write report.md (tables, findings, figures) from a recipe's results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.experiments.report import write_report
from pairless.inference.catalogue import resolve_recorded
from pairless.inference.known import know_modalities
from pairless.utils.storage import FolderLock, read_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless report",
                                     description="write report.md for a recipe's results")
    parser.add_argument("recipe_dir", type=Path, help="e.g. results/binding (holds results.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (args.recipe_dir / "results.json").is_file():
        parser.error(f"{args.recipe_dir}: no results.json (run `pairless run RECIPE` first)")
    paths = read_json(args.recipe_dir / "results.json").get("paths") or {}
    # the runner records them as --out was given: found again from any directory (or after a move)
    found = {}
    for key in ("shards", "tokenizers"):
        try:
            found[key] = resolve_recorded(args.recipe_dir, paths[key]) if key in paths else None
        except FileNotFoundError:
            found[key] = None  # the report names what it cannot show
    know_modalities(shards=found["shards"], tokenizers=found["tokenizers"])  # declared modalities
    with FolderLock(args.recipe_dir):  # the same lock `pairless run` holds while it writes this folder
        print(write_report(args.recipe_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
