"""Discrete tokenizers for every modality, and ``load_tokenizer`` to get one back from disk.

- image modalities (rgb, depth, normal, semseg, ...): :mod:`.spatial`
  (conv autoencoder + FSQ, normalisation in :mod:`.normalize`);
- sequence modalities (caption, det): :mod:`.text` (one shared WordPiece vocabulary), or ml-4m's
  WordPiece file for data tokenized as ml-4m does (:mod:`.ml4m_text`, type ``ml4m_text``);
- vector modalities (embed): :mod:`.vector` (MLP + FSQ).

Every tokenizer has ``spec`` (a :class:`pairless.batch.TokenSpec`),
``encode(values) -> LongTensor [N, L]`` and ``decode(ids) -> natural values``.
Training lives in :mod:`.neural_training` (``pairless tokenizers train``), the encoding of a dataset into
token shards in :mod:`.encode_dataset` (``pairless tokenize``), the reconstruction report in
:mod:`.reconstruction`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pairless.config import validate
from pairless.tokenizers.ml4m_text import Ml4mTextConfig, Ml4mTextTokenizer, load_ml4m_text_tokenizer
from pairless.tokenizers.spatial import SpatialTokenizer
from pairless.tokenizers.text import TextConfig, TextTokenizer, load_text_tokenizer
from pairless.tokenizers.vector import VectorTokenizer
from pairless.utils.storage import is_complete

TOKENIZER_TYPES = {"spatial": SpatialTokenizer, "vector": VectorTokenizer, "text": TextTokenizer,
                   "ml4m_text": Ml4mTextTokenizer}

__all__ = ["load_tokenizer", "available_modalities", "SpatialTokenizer", "VectorTokenizer", "TextTokenizer"]


def available_modalities(tokenizer_root: str | Path) -> list[str]:
    """Modalities with a complete tokenizer under ``tokenizer_root`` (sorted)."""
    root = Path(tokenizer_root)
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and is_complete(folder) and (folder / "config.json").is_file():
            if json.loads((folder / "config.json").read_text()).get("type") in TOKENIZER_TYPES:
                found.append(folder.name)
    return found


def load_tokenizer(tokenizer_root: str | Path, modality: str):
    """Load the trained tokenizer of ``modality`` from ``tokenizer_root`` (``TOKDIR``), in eval mode."""
    from pairless.data.declared import declare_from

    declare_from(tokenizer_root)  # the copy of a modality declaration the tokenizers were trained with
    folder = Path(tokenizer_root) / modality
    if not is_complete(folder):
        have = ", ".join(available_modalities(tokenizer_root)) or "none"
        raise FileNotFoundError(f"{folder}: no complete tokenizer for modality {modality!r} "
                                f"(complete ones under {tokenizer_root}: {have})")
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    kind = raw.get("type")
    if kind not in TOKENIZER_TYPES:
        raise ValueError(f"{folder / 'config.json'}: unknown tokenizer type {kind!r}; "
                         f"allowed: {', '.join(TOKENIZER_TYPES)}")
    if kind == "text":
        raw.pop("type")
        return load_text_tokenizer(tokenizer_root,
                                   validate(TextConfig, raw, prefix=str(folder / "config.json")))
    if kind == "ml4m_text":
        raw.pop("type")
        return load_ml4m_text_tokenizer(tokenizer_root,
                                        validate(Ml4mTextConfig, raw, prefix=str(folder / "config.json")))
    return TOKENIZER_TYPES[kind].load(folder)
