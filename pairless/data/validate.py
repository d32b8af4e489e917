"""Checks on natural modality values, shared by the writers and both readers.

Every check works on a whole column (``[N, ...]`` array or list of str plus a
``present`` mask) so that packed data is validated with a few vectorised numpy
operations; a single file is checked as a column of one. Problems come in two
sorts:

- a column-level problem (wrong dtype, wrong shape) raises :class:`DataError`
  through :class:`Problem`, which the caller re-raises naming the file;
- a row-level problem (NaN in one depth map, an empty caption) is returned as
  ``{row: reason}`` so the caller can either raise naming that row's file, or
  drop that sample's modality in ``on_bad_sample="skip"`` mode.

Rules (documented here because users hit them with their own data):

- images are square, ``(S, S)`` or ``(S, S, C)`` with ``C`` the registry's
  channel count; ``S`` is the dataset's size, taken from its first image;
- float modalities (depth, embed) must hold floating-point values (float16/64
  are cast to float32); integers are refused because an integer depth map's
  unit (millimetres? a 16-bit PNG scale?) is ambiguous: convert it yourself;
  NaN and inf are refused;
- depth-like maps (registry ``viz == "depth"``) must be strictly positive;
- uint8 modalities accept any integer dtype whose values lie in [0, 255];
  label maps (``num_classes`` set) must hold ids below ``num_classes``;
- text must be non-empty, at most :data:`MAX_TEXT_LENGTH` characters (or the
  modality's ``extra["max_length"]``), and free of NUL characters (the packed
  form stores text in fixed-width numpy arrays, which drop trailing NULs).
"""

from __future__ import annotations

import numpy as np

from pairless.modalities import Modality, declared_note

MAX_TEXT_LENGTH = 4096
_CHUNK_ROWS = 2048


class DataError(ValueError):
    """Bad input data; the message names the file (or split and row) and the problem."""


class Problem(Exception):
    """A problem with a file or a whole column (dtype, shape); the caller adds where it came from."""


def max_text_length(modality: Modality) -> int:
    return int(modality.extra.get("max_length", MAX_TEXT_LENGTH))


def infer_size(modality: Modality, shape: tuple[int, ...]) -> int:
    """The image size ``S`` from one image's shape; refuses non-square images."""
    if len(shape) < 2:
        raise Problem(f"shape {tuple(shape)} is not an image (expected (S, S) or (S, S, C))")
    height, width = shape[0], shape[1]
    if height != width or height == 0:
        raise Problem(f"image of shape {tuple(shape)} is not square; pairless needs (S, S) images")
    return int(height)


def _cast_dtype(modality: Modality, values: np.ndarray) -> np.ndarray:
    target = np.dtype(modality.dtype)
    kind = values.dtype.kind
    if target.kind == "f":
        if kind != "f":
            raise Problem(
                f"dtype {values.dtype}, expected floating point ({modality.dtype}); "
                f"integer or other values are refused for {modality.name!r} (convert them to float yourself)"
                + declared_note(modality, "dtype")
            )
        return values.astype(target, copy=False)
    if target.kind in "ui":
        if kind not in "ui":
            raise Problem(f"dtype {values.dtype}, expected integers ({modality.dtype}) for {modality.name!r}"
                          + declared_note(modality, "dtype"))
        if values.dtype != target and values.size:
            info = np.iinfo(target)
            low, high = int(values.min()), int(values.max())
            if low < info.min or high > info.max:
                raise Problem(
                    f"values in [{low}, {high}] do not fit {modality.dtype} [{info.min}, {info.max}] "
                    f"(16-bit images are refused for {modality.name!r})"
                )
        return values.astype(target, copy=False)
    raise Problem(f"registry dtype {modality.dtype!r} of {modality.name!r} is not supported for arrays")


def _expected_shape(modality: Modality, size: int | None, values: np.ndarray) -> tuple[int, ...]:
    if modality.kind == "vector":
        dim = modality.dim or (values.shape[1] if values.ndim == 2 else 0)
        return (dim,)
    if size is None:
        size = infer_size(modality, values.shape[1:])
    return modality.natural_shape(size)


def _fit_channels(modality: Modality, values: np.ndarray) -> np.ndarray:
    """Accept (N, S, S, 1) for a plain map and (N, S, S) for a 1-channel image."""
    if modality.kind != "image":
        return values
    if modality.channels == 0 and values.ndim == 4 and values.shape[-1] == 1:
        return values[..., 0]
    if modality.channels == 1 and values.ndim == 3:
        return values[..., None]
    return values


def check_array_column(
    modality: Modality, values: np.ndarray, present: np.ndarray, size: int | None
) -> tuple[np.ndarray, dict[int, str]]:
    """Validate an ``[N, ...]`` column of an image/vector modality.

    Returns the column cast to the registry dtype and ``{row: reason}`` for bad
    present rows; raises :class:`Problem` for a wrong dtype or shape.
    """
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise Problem(f"dtype {values.dtype} is not numeric (expected {modality.dtype})")
    values = _fit_channels(modality, values)
    expected = _expected_shape(modality, size, values)
    if values.shape[1:] != expected:
        what = "the dataset's image size and the registry's channel count" if modality.kind == "image" \
            else "the registry's dimension"
        raise Problem(f"shape {values.shape[1:]}, expected {expected} ({what})"
                      + declared_note(modality, "channels" if modality.kind == "image" else "dim"))
    values = _cast_dtype(modality, values)
    problems: dict[int, str] = {}
    rows = np.flatnonzero(present)
    # In chunks so that a memory-mapped column is never copied whole into memory.
    for start in range(0, rows.size, _CHUNK_ROWS):
        _check_rows(modality, values, rows[start:start + _CHUNK_ROWS], problems)
    return values, problems


def _check_rows(modality: Modality, values: np.ndarray, rows: np.ndarray, problems: dict[int, str]) -> None:
    block = values[rows]
    axes = tuple(range(1, block.ndim))
    if block.dtype.kind == "f":
        finite = np.isfinite(block).all(axis=axes)
        for row in rows[~finite]:
            problems[int(row)] = "contains NaN or inf"
        if modality.viz == "depth":
            for row, low in zip(rows, block.min(axis=axes), strict=True):
                if int(row) not in problems and not low > 0:
                    problems[int(row)] = f"non-positive depth (minimum {float(low):g}); depth must be > 0"
    if modality.num_classes is not None:
        for row, high in zip(rows, block.max(axis=axes), strict=True):
            if int(high) >= modality.num_classes:
                problems[int(row)] = (
                    f"class id {int(high)} out of range [0, {modality.num_classes}) for {modality.name!r}"
                    + declared_note(modality, "num_classes")
                )
    value_range = modality.extra.get("value_range")
    if value_range is not None:
        low, high = value_range
        for row, least, most in zip(rows, block.min(axis=axes), block.max(axis=axes), strict=True):
            if int(row) not in problems and not low <= float(least) <= float(most) <= high:
                problems[int(row)] = (f"values in [{float(least):g}, {float(most):g}] outside the range "
                                      f"[{low:g}, {high:g}]" + declared_note(modality, "value_range"))


def text_problem(modality: Modality, text: str) -> str | None:
    """The reason a text value is refused, or None when it is fine."""
    if not isinstance(text, str):
        return f"expected text (str), got {type(text).__name__}"
    if not text.strip():
        return "empty text"
    limit = max_text_length(modality)
    if len(text) > limit:
        return f"text of {len(text)} characters is over the maximum length {limit}"
    if "\x00" in text:
        return "text contains a NUL character"
    return None


def check_text_column(modality: Modality, values, present: np.ndarray) -> tuple[list[str], dict[int, str]]:
    """Validate a text column; absent rows become ''. Returns (texts, {row: reason})."""
    texts: list[str] = []
    problems: dict[int, str] = {}
    for row, (value, is_present) in enumerate(zip(values, present, strict=True)):
        if not is_present:
            texts.append("")
            continue
        value = str(value) if isinstance(value, np.str_) else value
        reason = text_problem(modality, value)
        if reason is not None:
            problems[row] = reason
            texts.append("")
        else:
            texts.append(value)
    return texts, problems
