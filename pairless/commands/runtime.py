"""``--threads N`` and ``--device auto|cpu|cuda[:N]``: the two arguments of every command that runs a model
or a tokenizer, added and resolved the same way everywhere (:mod:`pairless.utils.runtime`)."""

from __future__ import annotations

import argparse

from pairless.utils.runtime import DEVICE_CHOICES, Runtime


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive thread count")
    return value


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--threads`` and ``--device`` to ``parser`` (both default to None: :func:`resolve_runtime`)."""
    parser.add_argument("--threads", type=_positive, default=None, metavar="N",
                        help="torch CPU threads (default: the cores this process may use, capped by torch's "
                             "default; never chosen from the machine's load). The count can change the last "
                             "bits of results and is recorded with the outputs")
    parser.add_argument("--device", default=None, metavar="DEVICE",
                        help=f"{DEVICE_CHOICES} (default auto: the GPU when torch sees one, else the CPU)")


def resolve_runtime(args: argparse.Namespace, threads: int | None = None) -> Runtime:
    """The Runtime of parsed ``args``; ``threads``: the count to use when ``--threads`` was not given (e.g. a
    config's). ValueError naming the device when it is absent."""
    return Runtime.resolve(args.threads if args.threads is not None else threads, args.device or "auto")
