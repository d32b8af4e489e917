"""One sample's file in the folder form: bytes <-> natural value, per registry codec.

Codecs: ``png`` (Pillow; 1/3/4-channel uint8; jpg is read through the same
path), ``npy`` (``allow_pickle=False`` always), ``txt`` (UTF-8) and ``json``
(a string for text modalities, a list of numbers for arrays). Decoding raises
:class:`pairless.data.validate.Problem` with the reason; the folder reader
adds the file name.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pairless.data.validate import Problem, text_problem
from pairless.modalities import Modality, declared_note

_MODE_CHANNELS = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2, "CMYK": 4, "YCbCr": 3, "1": 1}


def _decode_image(modality: Modality, data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            if mode == "P":
                # Palette PNGs are common for label maps (the indices are the classes)
                # and for small colour images (convert the palette to colours).
                image = image.convert("RGB") if modality.channels == 3 else image
                mode = image.mode
            if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise Problem(f"{mode} image (16/32-bit); {modality.name!r} expects 8-bit {modality.dtype}"
                              + declared_note(modality, "dtype"))
            wanted = max(modality.channels, 1)
            have = 1 if mode == "P" else _MODE_CHANNELS.get(mode)
            if have is None:
                raise Problem(f"unsupported image mode {mode!r}")
            if have != wanted:
                raise Problem(f"image has {have} channel(s) (mode {mode}), "
                              f"{modality.name!r} expects {wanted}" + declared_note(modality, "channels"))
            if mode in ("YCbCr", "CMYK", "1"):
                image = image.convert("RGB" if wanted == 3 else "L")
            return np.asarray(image).copy()
    except Problem:
        raise
    # noqa: BLE001 - decoders of damaged bytes raise many kinds (struct.error, ...)
    except Exception as error:
        raise Problem(f"unreadable, truncated or corrupt image ({type(error).__name__}: {error})") from None


def _decode_npy(data: bytes) -> np.ndarray:
    try:
        value = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - a damaged header raises SyntaxError, tokenize.TokenError, ...
        raise Problem(f"unreadable .npy ({type(error).__name__}: {error})") from None
    if not isinstance(value, np.ndarray):
        raise Problem("not a single .npy array (an .npz archive?)")
    return value


def _decode_text(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Problem(f"text is not valid UTF-8 ({error})") from None
    # Editors add a final newline; it is not part of the caption.
    return text.removesuffix("\n").removesuffix("\r")


def decode(modality: Modality, path: Path):
    """Read one sample's file: an array for image/vector modalities, a str for text."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise Problem(f"cannot read file ({error.strerror or error})") from None
    suffix = path.suffix.lower()
    if suffix in (".png", ".jpg", ".jpeg"):
        value = _decode_image(modality, data)
    elif suffix == ".npy":
        value = _decode_npy(data)
    elif suffix == ".txt":
        value = _decode_text(data)
    elif suffix == ".json":
        try:
            value = json.loads(_decode_text(data))
        except json.JSONDecodeError as error:
            raise Problem(f"invalid JSON ({error})") from None
        if not modality.is_text:
            try:
                value = np.asarray(value, dtype=np.float64 if np.dtype(modality.dtype).kind == "f" else None)
            except (TypeError, ValueError) as error:
                raise Problem(f"JSON is not a numeric array ({error})") from None
    else:
        raise Problem(f"unsupported file type {suffix!r}")
    if modality.is_text:
        if not isinstance(value, str):
            raise Problem(f"expected text, file holds {type(value).__name__}")
    elif not isinstance(value, np.ndarray):
        raise Problem(f"expected an array, file holds {type(value).__name__}")
    return value


def encode(modality: Modality, value) -> bytes:
    """One sample's file bytes in the modality's registry codec (the value is already validated)."""
    if modality.codec == "png":
        array = np.asarray(value)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        buffer = io.BytesIO()
        # Level 1: several times faster than the default and only slightly larger for our images.
        Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    if modality.codec == "npy":
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        return buffer.getvalue()
    if modality.codec == "txt":
        return str(value).encode("utf-8")
    if modality.codec == "json":
        payload = str(value) if modality.is_text else np.asarray(value).tolist()
        return json.dumps(payload).encode("utf-8")
    raise ValueError(f"modality {modality.name!r}: unknown codec {modality.codec!r}")


def extension(modality: Modality) -> str:
    """The extension the writer uses: the registry's first accepted one."""
    return modality.extensions[0]


def decode_checked(modality: Modality, path: Path):
    """:func:`decode`, and a text that :func:`pairless.data.validate.text_problem` refuses (empty, too
    long, ...) raises :class:`Problem` too; arrays are checked by the caller, who knows the image size."""
    value = decode(modality, path)
    if modality.is_text:
        reason = text_problem(modality, value)
        if reason:
            raise Problem(reason)
    return value
