"""``pairless tokenizers train``: train the tokenizer of every modality in a dataset, then report.

Each modality is published on its own as ``TOKDIR/<modality>/``, so an interrupted run resumes with the
modalities still missing (see :mod:`pairless.tokenizers.build`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.commands.runtime import add_runtime_arguments, resolve_runtime
from pairless.config import ConfigError, apply_overrides
from pairless.experiments.scale import presets_epilog
from pairless.tokenizers.build import build_tokenizers
from pairless.tokenizers.neural_training import preset_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless tokenizers", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    train = verbs.add_parser("train", help="train the tokenizers of every modality in a dataset",
                             epilog=presets_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--data", required=True, type=Path,
                       help="dataset folder (with train/ and val/ splits)")
    train.add_argument("--out", required=True, type=Path, help="tokenizer folder TOKDIR")
    train.add_argument("--preset", default="tiny", help="micro | demo | tiny | base")
    train.add_argument("--modalities", nargs="+", default=None, help="only these (default: all in the data)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="config override, e.g. spatial.steps=500 or steps=20 (repeatable)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-report", action="store_true", help="skip the reconstruction report")
    train.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                       help="a bad file (unreadable, wrong shape, NaN, a stray non-sample file): stop "
                            "naming it (error), or leave it out, count it and list it in "
                            "TOKDIR/bad_samples.json (skip)")
    add_runtime_arguments(train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = apply_overrides(preset_config(args.preset, seed=args.seed), args.overrides)
        runtime = resolve_runtime(args, config.threads)  # --threads, else --set threads=N, else the default
    except (ConfigError, ValueError) as error:
        print(f"pairless tokenizers: {error}", file=sys.stderr)
        return 2
    try:
        info = build_tokenizers(args.data, args.out, config, args.modalities, report=not args.no_report,
                                threads=runtime.threads, on_bad_sample=args.on_bad_sample,
                                device=runtime.device)
    except (ValueError, KeyError, FileExistsError, FileNotFoundError, RuntimeError) as error:
        # Bad data, a clashing earlier run or a held lock: the message names the file or field.
        print(f"pairless tokenizers: {error}", file=sys.stderr)
        return 1
    if info is None:
        print(f"{args.out} is complete with these data and settings; nothing to do", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
