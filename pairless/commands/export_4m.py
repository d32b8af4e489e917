"""``pairless export-4m RUN --out CHECKPOINT``: a run's model as an ml-4m checkpoint (safetensors with the
FM config in its metadata, ml-4m's tensor and modality names), for ml-4m's own code to load.

Only a model with ml-4m's options can be exported: an imported one, or one trained with
``--set model.style=ml4m``; any other is refused, naming each option that differs. See docs/ml4m.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.training.imported import export_run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless export-4m", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder (or its model.safetensors)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    parser.add_argument("--modalities", type=Path, default=None,
                        help="modality mapping file (default: pairless/model/ml4m_modalities.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = export_run(args.run, args.out, args.modalities)
    except (ValueError, FileNotFoundError) as error:
        print(f"pairless export-4m: {error}", file=sys.stderr)
        return 2
    print(f"exported {summary['tensors']} tensors ({', '.join(summary['modalities'])}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
