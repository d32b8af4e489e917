"""argparse types shared by several verbs: a modality pair ``A:B`` (``run --withhold``, ``audit
--withhold``) and an allowance ``A:B=K`` (``audit --allow-pair``), parsed once here into typed values."""

from __future__ import annotations

import argparse

from pairless.modalities import Pair


def pair_argument(text: str) -> Pair:
    """argparse ``type=`` for ``A:B`` (the message of a bad one is kept)."""
    try:
        return Pair.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def allowance_argument(text: str) -> tuple[str, int]:
    """argparse ``type=`` for ``A:B=K`` (K samples may keep both of the withheld pair A:B)."""
    pair, _, count = text.partition("=")
    try:
        return str(Pair.parse(pair)), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected A:B=K, e.g. rgb:depth=64") from None
