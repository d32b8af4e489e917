"""Boxes as text (the ``det`` modality), 4M style: per object 4 quantized coordinates, then the class name.

Format, one object after another, single spaces, no punctuation::

    v0 <x0> v1 <y0> v2 <x1> v3 <y1> <class name>

e.g. ``v0 12 v1 5 v2 31 v3 22 sphere v0 40 v1 9 v2 51 v3 30 cube``.
A box is ``(x0, y0, x1, y1)`` in pixels with exclusive ends (a one-pixel box
at column c spans c..c+1); each coordinate is quantized to one of
``num_bins`` bins over ``[0, size]``: ``bin = round(x / size * (num_bins - 1))``,
decoded as ``bin * size / (num_bins - 1)`` (then rounded to whole pixels).
With the default 64 bins, integer pixel boxes round-trip exactly for
``size <= 63``; at 64 and beyond a coordinate can come back one pixel off.
Objects are listed top to bottom, then left to right (by y0, then x0).
The ``v0``..``v3`` markers let a parser (and a generative model) keep its
place; :func:`parse_det_text` also accepts the ``v0=12`` spelling and commas.
"""

from __future__ import annotations

import re

DET_BINS = 64
_MARKERS = ("v0", "v1", "v2", "v3")
_TOKEN = re.compile(r"[a-z_]+[0-9]*|[0-9]+")


def quantize(value: float, size: int, num_bins: int = DET_BINS) -> int:
    """Pixel coordinate in [0, size] -> bin index in [0, num_bins - 1]."""
    return int(min(max(round(value / size * (num_bins - 1)), 0), num_bins - 1))


def dequantize(index: int, size: int, num_bins: int = DET_BINS) -> float:
    """Bin index -> pixel coordinate (the inverse of :func:`quantize` up to rounding)."""
    return index * size / (num_bins - 1)


def det_to_text(objects, size: int, num_bins: int = DET_BINS) -> str:
    """``objects``: iterable of (class name, (x0, y0, x1, y1) in pixels) -> det text.

    Scene dicts from :mod:`pairless.world` can be passed directly as their
    ``"objects"`` list: each item then is a dict with ``"shape"`` and ``"box"``.
    """
    pairs = []
    for item in objects:
        name, box = (item["shape"], item["box"]) if isinstance(item, dict) else item
        if len(box) != 4:
            raise ValueError(f"det box for {name!r} must have 4 coordinates, got {box!r}")
        if " " in name or not name:
            raise ValueError(f"det class name must be one non-empty word, got {name!r}")
        pairs.append((name, tuple(box)))
    pairs.sort(key=lambda pair: (pair[1][1], pair[1][0], pair[1][3], pair[1][2], pair[0]))
    words = []
    for name, box in pairs:
        for marker, value in zip(_MARKERS, box, strict=True):
            words += [marker, str(quantize(value, size, num_bins))]
        words.append(name)
    return " ".join(words)


def parse_det_text(text: str, size: int, num_bins: int = DET_BINS,
                   multiword: bool = False) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Det text -> ``[(class name, (x0, y0, x1, y1) in pixels)]``.

    Tolerant, for scoring generated text: malformed objects (a missing or
    out-of-order marker, a bin out of range, a missing class name) are
    skipped and parsing resumes at the next ``v0``. Empty or garbage text
    gives an empty list. ``multiword``: a class name is every word up to the
    next marker (ml-4m's COCO names: ``teddy bear``), not the first one only.
    """
    tokens = _TOKEN.findall(text.lower())
    objects = []
    index = 0
    while index < len(tokens):
        window = tokens[index:index + 9]
        if len(window) == 9 and all(window[2 * k] == _MARKERS[k] for k in range(4)) \
                and all(window[2 * k + 1].isdigit() for k in range(4)) and window[8].isalpha():
            bins = [int(window[2 * k + 1]) for k in range(4)]
            if all(0 <= value < num_bins for value in bins):
                box = tuple(int(round(dequantize(value, size, num_bins))) for value in bins)
                words = [window[8]]
                while multiword and index + 8 + len(words) < len(tokens) \
                        and tokens[index + 8 + len(words)].isalpha() \
                        and tokens[index + 8 + len(words)] not in _MARKERS:
                    words.append(tokens[index + 8 + len(words)])
                objects.append((" ".join(words), box))
                index += 8 + len(words)
                continue
        index += 1
        while index < len(tokens) and tokens[index] != _MARKERS[0]:
            index += 1
    return objects
