"""``pairless train``: train a 4M-style model on token shards (the loop is :mod:`pairless.training.train`).

A config file, then flags, then ``--set`` overrides. Multi-process::

    torchrun --nproc-per-node 2 -m pairless train --shards SHARDS --out RUN ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pairless.commands.runtime import add_runtime_arguments
from pairless.config import ConfigError, apply_overrides, validate
from pairless.experiments.scale import presets_epilog
from pairless.modalities import parse_pair
from pairless.model import PRESETS
from pairless.training.config import TrainConfig
from pairless.training.run import TrainingDiverged, TrainingInterrupted
from pairless.training.train import train
from pairless.utils.storage import read_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairless train", description=__doc__.split("\n\n")[0],
                                     epilog=presets_epilog(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="a TrainConfig as JSON (flags and --set apply on top)")
    parser.add_argument("--shards", type=Path, help="token shards folder")
    parser.add_argument("--out", type=Path, help="run folder")
    parser.add_argument("--preset", help=f"model preset: {', '.join(PRESETS)}; not with a --config file that "
                                         "has a model section (that is an error)")
    parser.add_argument("--withhold", action="append", default=[], metavar="A:B",
                        help="a modality pair that never co-occurs in training (repeatable)")
    parser.add_argument("--universe", help="comma-separated modalities used in training (default: all)")
    parser.add_argument("--total-tokens", type=int, help="token budget (valid inputs + targets)")
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--init-from", type=Path, metavar="RUN",
                        help="start from this run's final weights (fresh optimizer and schedule), e.g. to "
                             "continue a zero-shot run on pseudo-pairs")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set masking.input_budget=32")
    add_runtime_arguments(parser)  # --threads -> num_threads, --device -> device
    parser.add_argument("--accept-thread-change", action="store_true",
                        help="with --resume: continue on the --threads given although the run's checkpoints "
                             "were trained with another count (the continuation is then not bit-identical "
                             "to an uninterrupted run); without it that is refused")
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Config file, then flags, then ``--set`` overrides; validated with errors naming the field."""
    data = read_json(args.config) if args.config else {}
    for key, value in (("shards", args.shards), ("out", args.out), ("total_tokens", args.total_tokens),
                       ("batch_size", args.batch_size), ("init_from", args.init_from),
                       ("num_threads", args.threads), ("device", args.device)):
        if value is not None:  # paths from the current directory, recorded absolute (read from anywhere)
            data[key] = str(value.absolute()) if isinstance(value, Path) else value
    if args.preset:
        if "model" in data:
            raise ConfigError(f"--preset {args.preset}: {args.config} has a model section already; "
                              "drop one of the two (or change single fields with --set model.dim=...)")
        data["model"] = {"preset": args.preset}
    if any(item.split("=", 1)[0].strip() == "model.preset" for item in args.set):
        raise ConfigError("--set model.preset: a preset sets the whole model shape; use --preset NAME "
                          "(and --set model.FIELD=... for single fields)")
    fragment = data.setdefault("fragment", {})
    if args.withhold:
        try:
            fragment["withheld"] = [list(parse_pair(text)) for text in args.withhold]
        except ValueError as error:
            raise ConfigError(f"--withhold: {error}") from None
    if args.universe:
        fragment["universe"] = [name.strip() for name in args.universe.split(",") if name.strip()]
    return apply_overrides(validate(TrainConfig, data), args.set)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except (ConfigError, ValueError) as error:
        print(f"pairless train: {error}", file=sys.stderr)
        return 2
    try:
        train(config, resume=args.resume, accept_thread_change=args.accept_thread_change)
    except TrainingInterrupted as error:
        print(f"pairless train: {error}", file=sys.stderr)
        return 128 + error.signal_number
    except (TrainingDiverged, ConfigError, ValueError, FileExistsError, FileNotFoundError,
            RuntimeError) as error:
        print(f"pairless train: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
