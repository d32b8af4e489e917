"""ml-4m's pre-tokenized datasets as pairless token shards (``pairless import-4m-data``, docs/ml4m.md).

What ml-4m keeps on disk (its README_DATA; the layout is read by :mod:`pairless.data.ml4m_layout`):
- image-like and global modalities (``tok_rgb@224``, ``tok_dinov2_global``...): one ``.npy`` per sample of
  int16 ids, shape ``(n_crops, tokens)``; crop 0 is the centre crop, unflipped, and is the one imported;
- ``caption``: raw text (``.txt``, or ``.json``/``.json.gz`` holding a string, a list whose first entry
  is taken, as ml-4m does for crop 0, or ``{"caption": ...}``); ``det``: ml-4m's box JSON. Both are
  tokenized here with ml-4m's WordPiece ``tokenizer.json`` (:mod:`.ml4m_text`); boxes are moved into crop 0
  when the split has ``crop_settings`` and the raw images (``rgb/``) that give the original size, as ml-4m
  does at load time.

Modality names, token grids and vocabularies come from the mapping file of ``pairless import-4m``
(``pairless/model/ml4m_modalities.json`` or ``--modalities``), so the shards' TokenSpecs are those of an
imported checkpoint. A sample missing a modality has it absent (presence marks); a member that cannot be read
is an error naming its shard and key, or, with ``on_bad_sample="skip"``, absent too and listed in the
manifest's ``bad_samples``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from pairless.batch import TokenSpec
from pairless.config import Config
from pairless.data.ml4m_layout import (
    CROP_SETTINGS,
    BadShard,
    Member,
    find_splits,
    modality_folders,
    read_mapping,
    read_members,
)
from pairless.data.shards import ShardSplit, write_shards
from pairless.data.streamed_shards import write_streamed
from pairless.data.validate import DataError
from pairless.tokenizers import ml4m_text
from pairless.utils.storage import is_complete, mark_complete

TOKENIZERS_FOLDER = "tokenizers"  # inside the shards: the text tokenizers, so that decoding finds them


class Ml4mDataConfig(Config):
    """What ``pairless import-4m-data`` reads and how."""

    root: Path
    out: Path
    mapping: Path | None = None  # None: pairless/model/ml4m_modalities.json
    text_tokenizer: Path | None = None  # ml-4m's tokenizer.json (needed when caption/det folders exist)
    folders: dict[str, str] = Field(default_factory=dict)  # folder name -> ml-4m modality (modality_name_map)
    split: str = "train"  # the split's name when ROOT itself holds the modality folders
    image_folder: str = "rgb"  # raw images giving the original size for det crops
    on_bad_sample: Literal["error", "skip"] = "error"
    format: Literal["packed", "webdataset"] = "packed"
    shard_samples: int = Field(default=1000, ge=1)  # webdataset: samples per tar shard
    overwrite: bool = False


@dataclass
class _Column:
    """One modality of one split while it is read: key -> value, and what went wrong."""

    values: dict[str, object]
    bad: list[tuple[str, str]]


def _specs(mapping: dict, names: list[str], vocabulary, where: str) -> dict[str, TokenSpec]:
    """pairless TokenSpecs of the ml-4m modalities ``names`` (pairless names as keys)."""
    specs = {}
    for ml4m_name in names:
        entry = mapping["modalities"][ml4m_name]
        name, kind = entry["name"], entry.get("kind")
        if kind == "sequence":
            text = mapping["text"]
            bos = vocabulary.token_to_id(ml4m_text.BOS_TOKEN)
            mismatch = {key: (text.get(key), found) for key, found in
                        (("pad_id", ml4m_text.PAD_ID), ("eos_id", ml4m_text.EOS_ID), ("bos_id", bos))
                        if text.get(key) != found}
            if mismatch:
                raise ValueError(f"{where}: the 'text' ids {mismatch} (mapping, tokenizer.json) disagree")
            specs[name] = TokenSpec(name, "sequence", int(entry["num_tokens"]), vocabulary.get_vocab_size(),
                                    pad_id=text["pad_id"], bos_id=bos, eos_id=text["eos_id"])
            continue
        if "vocab_size" not in entry:
            raise ValueError(f"{where}: modality {ml4m_name!r} has no 'vocab_size' (the vocabulary of its "
                             "tokens); add it to a --modalities file")
        if kind == "image":
            if not entry.get("grid"):
                raise ValueError(f"{where}: image modality {ml4m_name!r} has no 'grid' [h, w]")
            grid = tuple(int(side) for side in entry["grid"])
            specs[name] = TokenSpec(name, "image", grid[0] * grid[1], int(entry["vocab_size"]), grid=grid)
        elif kind == "vector":
            if "num_tokens" not in entry:
                raise ValueError(f"{where}: modality {ml4m_name!r} has no 'num_tokens'")
            specs[name] = TokenSpec(name, "vector", int(entry["num_tokens"]), int(entry["vocab_size"]))
        else:
            raise ValueError(f"{where}: modality {ml4m_name!r} has kind {kind!r}; expected image, vector or "
                             "sequence")
    return specs


def decode_tokens(data: bytes, spec: TokenSpec) -> np.ndarray:
    """Crop 0 of one ``.npy`` of ml-4m tokens as int32 ``[num_tokens]``; ValueError saying what is wrong."""
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - a damaged header raises ValueError, SyntaxError, ...
        raise ValueError(f"unreadable .npy ({type(error).__name__}: {error})") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iu":
        raise ValueError(f"tokens must be an integer array, got {getattr(array, 'dtype', type(array))}")
    if array.ndim == 0:
        raise ValueError("tokens must be an array (n_crops, tokens), got a scalar")
    crop = array.reshape(-1) if array.ndim == 1 else array[0].reshape(-1)  # (n_crops, H*W) or (n, H, W)
    if crop.size != spec.num_tokens:
        raise ValueError(f"crop 0 has {crop.size} tokens, modality {spec.name!r} has {spec.num_tokens} "
                         f"(array of shape {list(array.shape)})")
    low, high = int(crop.min()), int(crop.max())
    if low < 0 or high >= spec.vocab_size:
        raise ValueError(f"token ids in [{low}, {high}] outside [0, {spec.vocab_size}) (vocab_size of "
                         f"{spec.name!r})")
    return crop.astype(np.int32)


def decode_text(data: bytes, extension: str):
    """A caption or det member: a string, or the parsed JSON (ml-4m's ``.txt``, ``.json``, ``.json.gz``)."""
    try:
        if extension.endswith("gz"):
            data = gzip.decompress(data)
        text = data.decode("utf-8")
        return json.loads(text) if "json" in extension else text
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"unreadable {extension} ({type(error).__name__}: {error})") from None


def _caption(value) -> str:
    """ml-4m's caption of crop 0: the string, the first of a list, or a dict's 'caption'."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list of captions")
        value = value[0]
    if isinstance(value, dict):
        value = value.get("caption")
    if not isinstance(value, str):
        raise ValueError(f"a caption is a string (or a list of them), got {type(value).__name__}")
    return value


def _read_column(folder: Path, decode, on_bad_sample: str) -> _Column:
    """Every member of one modality folder decoded; a bad one raises DataError or is listed (skip)."""
    column = _Column({}, [])

    def bad(where: str, reason: str) -> None:
        if on_bad_sample == "error":
            raise DataError(f"{where}: {reason} (--on-bad-sample skip leaves it out)")
        column.bad.append((where, reason))

    for member in read_members(folder):
        if isinstance(member, BadShard):
            bad(member.where, member.reason)
            continue
        if member.key in column.values:
            bad(member.where, f"a second member with key {member.key!r} (the first is kept)")
            continue
        try:
            column.values[member.key] = decode(member)
        except ValueError as error:
            bad(f"{member.where} (key {member.key!r})", str(error))
    return column


def _crop_and_size(split_folder: Path, image_folder: str, keys: list[str]) -> dict[str, tuple]:
    """key -> (crop 0 as (top, left, height, width), original (height, width)) where both are on disk."""
    if not (split_folder / CROP_SETTINGS).is_dir() or not (split_folder / image_folder).is_dir():
        return {}
    from PIL import Image

    wanted = set(keys)
    crops, sizes = {}, {}
    for member in read_members(split_folder / CROP_SETTINGS):
        if isinstance(member, Member) and member.key in wanted:
            try:
                crops[member.key] = tuple(float(value) for value in
                                          np.load(io.BytesIO(member.data), allow_pickle=False)[0][:4])
            except Exception:  # noqa: BLE001 - an unreadable crop: the boxes stay as they are
                continue
    for member in read_members(split_folder / image_folder):
        if isinstance(member, Member) and member.key in crops:
            try:
                width, height = Image.open(io.BytesIO(member.data)).size  # the header only
            except Exception:  # noqa: BLE001 - as above
                continue
            sizes[member.key] = (height, width)
    return {key: (crops[key], sizes[key]) for key in sizes}


def _tokenizer_folder(staging: Path, vocabulary, vocabulary_source: Path,
                      text_tokenizers: dict[str, ml4m_text.Ml4mTextTokenizer]) -> None:
    """SHARDS/tokenizers: ml-4m's vocabulary and one ``ml4m_text`` tokenizer per text modality."""
    root = staging / TOKENIZERS_FOLDER
    folder = root / ml4m_text.VOCABULARY_FOLDER
    folder.mkdir(parents=True)
    ml4m_text.save_vocabulary(vocabulary, folder, {"source": str(vocabulary_source)})
    mark_complete(folder)
    for name, tokenizer in text_tokenizers.items():
        (root / name).mkdir()
        tokenizer.save(root / name)
        mark_complete(root / name)


def _decoder(spec: TokenSpec, form: str | None):
    """member -> value for one modality: crop-0 tokens, a caption string, or a det record."""
    def tokens(member: Member):
        return decode_tokens(member.data, spec)

    def caption(member: Member):
        return _caption(decode_text(member.data, member.extension))

    def detection(member: Member):
        return decode_text(member.data, member.extension)

    return tokens if spec.kind != "sequence" else detection if form == "det" else caption


def _text_column(column: _Column, tokenizer: ml4m_text.Ml4mTextTokenizer, row_of: dict[str, int],
                 crops: dict[str, tuple], on_bad_sample: str, where: str):
    """Ids of one text column and the rows they belong to; how many were cut; bad records (skip)."""
    values, rows, bad = [], [], []
    for key, value in column.values.items():
        try:
            if tokenizer.config.form == "det":
                crop, size = crops.get(key, (None, None))
                value = ml4m_text.detection_text(value, tokenizer.bins, tokenizer.config.detection_threshold,
                                                 crop, size)
            values.append(value)
            rows.append(row_of[key])
        except ValueError as error:
            if on_bad_sample == "error":
                raise DataError(f"{where} key {key!r}: {error} (--on-bad-sample skip leaves it out)") \
                    from None
            bad.append((f"{where} key {key!r}", str(error)))
    ids, cut = tokenizer.encode_counting(values)
    return ids.numpy(), rows, cut, bad


def _import_split(split_folder: Path, folders: dict[str, Path], specs: dict[str, TokenSpec],
                  names: dict[str, str], text_tokenizers: dict, forms: dict[str, str | None],
                  config: Ml4mDataConfig) -> tuple[ShardSplit, list, dict[str, int]]:
    """One split: (its shard split, the bad members, texts cut per modality)."""
    columns = {names[ml4m_name]: _read_column(folder, _decoder(specs[names[ml4m_name]], forms[ml4m_name]),
                                              config.on_bad_sample)
               for ml4m_name, folder in folders.items() if ml4m_name in names}
    keys = sorted({key for column in columns.values() for key in column.values})
    if not keys:
        raise DataError(f"{split_folder}: no readable sample in {', '.join(folders)}")
    row_of = {key: row for row, key in enumerate(keys)}
    bad = [item for column in columns.values() for item in column.bad]
    tokens, present, truncated = {}, {}, {}
    for name, spec in specs.items():
        tokens[name] = np.zeros((len(keys), spec.num_tokens), dtype=np.int32)
        present[name] = np.zeros(len(keys), dtype=bool)
        column = columns.get(name, _Column({}, []))
        if spec.kind != "sequence":
            for key, value in column.values.items():
                tokens[name][row_of[key]], present[name][row_of[key]] = value, True
        elif column.values:
            tokenizer = text_tokenizers[name]
            crops = _crop_and_size(split_folder, config.image_folder, list(column.values)) \
                if tokenizer.config.form == "det" else {}
            ids, rows, cut, failed = _text_column(column, tokenizer, row_of, crops, config.on_bad_sample,
                                                  f"{split_folder} {name}")
            tokens[name][rows], present[name][rows] = ids, True
            bad += failed
            if cut:
                truncated[name] = cut
    return ShardSplit(ids=keys, tokens=tokens, present=present), bad, truncated


def import_ml4m_data(config: Ml4mDataConfig) -> dict:
    """Read ``config.root`` and write token shards to ``config.out``; returns a summary (counts, seconds)."""
    started = time.perf_counter()
    mapping = read_mapping(config.mapping)
    where = str(config.mapping or "pairless/model/ml4m_modalities.json")
    unknown = sorted(set(config.folders.values()) - set(mapping["modalities"]))
    if unknown:
        raise ValueError(f"--folder: {', '.join(unknown)} not in the modality mapping ({where})")
    known = set(mapping["modalities"])
    splits = find_splits(config.root, known, config.folders, config.split)
    folders = {split: modality_folders(path, known, config.folders) for split, path in splits.items()}
    found = sorted({name for per_split in folders.values() for name in per_split})
    entries = mapping["modalities"]
    left_out = {name: "ml-4m builds its text from other files at load time; pairless reads caption and det "
                "text only" for name in found if entries[name].get("kind") == "sequence"
                and entries[name].get("text_form") not in ("text", "det")}
    for name, reason in left_out.items():
        print(f"pairless import-4m-data: left out {name} ({reason})", file=sys.stderr)
    kept = [name for name in found if name not in left_out]
    texts = [name for name in kept if entries[name].get("kind") == "sequence"]
    vocabulary = None
    if texts:
        if config.text_tokenizer is None:
            raise ValueError(f"text modalities {', '.join(texts)} need ml-4m's WordPiece: pass "
                             "--text-tokenizer tokenizer.json (ml-4m's fourm/utils/tokenizer/trained/"
                             "text_tokenizer_4m_wordpiece_30k.json)")
        vocabulary = ml4m_text.read_vocabulary(config.text_tokenizer)
    specs = _specs(mapping, kept, vocabulary, where)
    names = {ml4m_name: entries[ml4m_name]["name"] for ml4m_name in kept}  # ml-4m name -> pairless name
    forms = {ml4m_name: entries[ml4m_name].get("text_form") for ml4m_name in kept}
    text_tokenizers = {
        names[ml4m_name]: ml4m_text.Ml4mTextTokenizer(
            ml4m_text.Ml4mTextConfig(modality=names[ml4m_name], num_tokens=specs[names[ml4m_name]].num_tokens,
                                     form=forms[ml4m_name]), vocabulary, str(config.text_tokenizer))
        for ml4m_name in texts}
    shard_splits, bad_samples, truncated = {}, {}, {}
    for split, split_folder in splits.items():
        shard_splits[split], bad, cut = _import_split(split_folder, folders[split], specs, names,
                                                      text_tokenizers, forms, config)
        if bad:
            bad_samples[split] = [list(item) for item in bad]
            print(f"pairless import-4m-data: skipped {len(bad)} bad member(s) in {split} (first: "
                  f"{bad[0][0]}: {bad[0][1]}); all listed in {config.out}/manifest.json under bad_samples",
                  file=sys.stderr)
        for name, count in cut.items():
            truncated.setdefault(split, {})[name] = count
            print(f"pairless import-4m-data: {count} {name} text(s) of {split} cut to "
                  f"{specs[name].num_tokens} tokens, as ml-4m cuts them (their [EOS] lost)", file=sys.stderr)
    info = {"source": "ml-4m", "ml4m_root": str(Path(config.root).resolve()), "mapping": where,
            "modalities_ml4m": {names[name]: name for name in kept},
            **({"left_out": left_out} if left_out else {}),
            **({"bad_samples": bad_samples} if bad_samples else {}),
            **({"truncated_texts": truncated} if truncated else {})}
    _write(config, shard_splits, specs, info, vocabulary, text_tokenizers)
    return {"splits": {split: len(data.ids) for split, data in shard_splits.items()},
            "present": {split: {name: int(mask.sum()) for name, mask in data.present.items()}
                        for split, data in shard_splits.items()},
            "modalities": {names[name]: name for name in kept},
            "bad": sum(len(items) for items in bad_samples.values()),
            "seconds": time.perf_counter() - started}


def _write(config: Ml4mDataConfig, shard_splits: dict, specs: dict, info: dict, vocabulary,
           text_tokenizers: dict) -> None:
    """Packed shards at ``config.out``, or packed beside it then written as tars (``--format webdataset``,
    as ``pairless tokenize`` does); the text tokenizers inside them (``tokenizers/``)."""
    out = Path(config.out)
    extra = None
    if text_tokenizers:
        source = Path(config.text_tokenizer)
        info.update(text_tokenizer=str(source.resolve()),
                    text_tokenizer_sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
                    tokenizers=str((out / TOKENIZERS_FOLDER).resolve()))

        def extra(staging: Path) -> None:
            _tokenizer_folder(staging, vocabulary, source, text_tokenizers)
    if config.format == "packed":
        write_shards(out, shard_splits, specs, info, overwrite=config.overwrite, extra=extra)
        return
    if is_complete(out) and not config.overwrite:
        raise FileExistsError(f"{out} already holds complete shards (--overwrite to replace them)")
    packed = out.with_name(out.name + ".packed")
    write_shards(packed, shard_splits, specs, info, overwrite=True, extra=extra)
    if out.exists():
        shutil.rmtree(out)
    write_streamed(packed, out, config.shard_samples)
    shutil.rmtree(packed)
