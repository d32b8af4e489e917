"""ml-4m-layout datasets and an ml-4m-like WordPiece file, written by the tests themselves (no download).

- :func:`build_vocabulary`: a ``tokenizers``-library WordPiece with ml-4m's fixed ids ([PAD] 0, [UNK] 1,
  [SOS] 2, [EOS] 3, [S_0..S_199] 4..203), ``bins`` coordinate tokens per axis (v0=.. v3=), a lowercasing
  BERT normaliser, padded with filler words to ``size`` entries (the fixture's caption vocabulary is 256);
- :func:`write_layout`: ml-4m's README_DATA layout, a split as webdataset tars or as plain files, int16
  tokens of shape (n_crops, H*W), raw captions (.txt / .json) and det JSON.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer

WORDS = ["a", "red", "blue", "green", "cube", "sphere", "cone", "on", "the", "floor", "big", "small", "and",
         "##s", ".", "two", "three"]
COLOURS, SHAPES = ["red", "blue", "green"], ["cube", "sphere", "cone"]


def build_vocabulary(bins: int = 8, size: int = 256) -> Tokenizer:
    specials = ["[PAD]", "[UNK]", "[SOS]", "[EOS]", *(f"[S_{index}]" for index in range(200))]
    coordinates = [f"v{axis}={value}" for axis in range(4) for value in range(bins)]
    tokens = specials + coordinates + WORDS
    tokens += [f"filler{index}" for index in range(size - len(tokens))]
    tokenizer = Tokenizer(WordPiece(vocab={token: index for index, token in enumerate(tokens)},
                                    unk_token="[UNK]"))
    tokenizer.normalizer = BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.add_special_tokens([AddedToken(token, normalized=False) for token in specials])
    tokenizer.add_special_tokens([AddedToken(token, single_word=True, normalized=False)
                                  for token in coordinates])
    return tokenizer


def write_vocabulary(path: Path, bins: int = 8, size: int = 256) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    build_vocabulary(bins, size).save(str(path))
    return path


def sample_values(count: int, grids: dict[str, tuple[int, int, int]], seed: int = 0) -> dict[str, list]:
    """Per ml-4m modality, ``count`` values: int16 tokens (2 crops, H*W) whose depth/normal are functions of
    rgb, a caption naming the colour and shape (learnable from rgb), a det record with one box.
    ``grids``: ml-4m image modality -> (h, w, vocab)."""
    rng = np.random.default_rng(seed)
    colour, shape = rng.integers(0, 3, count), rng.integers(0, 3, count)
    base = (colour * 3 + shape)[:, None] + rng.integers(0, 2, (count, 64))
    values: dict[str, list] = {}
    for index, (name, (height, width, vocab)) in enumerate(grids.items()):
        crop0 = (base[:, :height * width] * (index + 1)) % vocab
        crops = np.stack([crop0, rng.integers(0, vocab, crop0.shape)], 1)  # crop 1: another (random) crop
        values[name] = [crops[row].astype(np.int16) for row in range(count)]
    values["caption"] = [f"A {COLOURS[c].upper()} {SHAPES[s]} on the floor." for c, s in
                         zip(colour, shape, strict=True)]
    values["det"] = [{"instances": [
        {"boxes": [0.1, 0.2, 0.5, 0.6], "class_name": SHAPES[s], "score": 0.9},
        {"boxes": [0.0, 0.0, 0.3, 0.3], "class_name": "cube", "score": 0.2}]} for s in shape]  # one below 0.6
    return values


def _encode(name: str, value) -> tuple[str, bytes]:
    if isinstance(value, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, value)
        return "npy", buffer.getvalue()
    if isinstance(value, dict):
        return "json", json.dumps(value).encode()
    return ("json", json.dumps([value, "a second caption"]).encode()) if name == "caption" and \
        len(value) % 2 else ("txt", value.encode())


def write_layout(split_folder: Path, values: dict[str, list], form: str = "tars", shard_samples: int = 8,
                 missing: dict[str, set[int]] | None = None, corrupt: dict[str, int] | None = None) -> Path:
    """One split in ml-4m's layout. ``missing``: modality -> rows without it; ``corrupt``: modality -> one row
    whose member holds garbage bytes."""
    missing, corrupt = missing or {}, corrupt or {}
    count = len(next(iter(values.values())))
    for name, column in values.items():
        folder = split_folder / name
        folder.mkdir(parents=True, exist_ok=True)
        members = []
        for row in range(count):
            if row in missing.get(name, set()):
                continue
            extension, data = _encode(name, column[row])
            if corrupt.get(name) == row:
                data = b"\x93NUMPY garbage" if extension == "npy" else b"\xff{not json"
            members.append((f"{row:06d}", extension, data))
        if form == "tars":
            for shard, start in enumerate(range(0, len(members), shard_samples)):
                with tarfile.open(folder / f"shard-{shard:05d}.tar", "w") as archive:
                    for key, extension, data in members[start:start + shard_samples]:
                        info = tarfile.TarInfo(f"{key}.{extension}")
                        info.size = len(data)
                        archive.addfile(info, io.BytesIO(data))
        else:
            for key, extension, data in members:
                path = folder / f"part{int(key) % 2}" / f"{key}.{extension}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    return split_folder
