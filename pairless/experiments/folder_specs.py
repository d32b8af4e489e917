"""The token specs a user's folder will get, known before any tokenizer has trained (the plan of
``pairless run own-data --dry-run``).

What a sample holds decides the budgets a run can mask (:func:`pairless.experiments.own_recipe.fit_budgets`)
and the time of every stage, so the plan reads just enough of the train split to know it exactly:

- image modalities: one file (the first readable one, as the folder reader takes the image size from it);
  tokens = (size / the tokenizer preset's downsample)^2;
- vector modalities: the vector tokenizer's fixed token count;
- text modalities: every train text, through the vocabulary the tokenizers will build from them
  (:func:`pairless.tokenizers.text.train_vocabulary`) and the padded length they will get
  (:func:`pairless.tokenizers.text.padded_length`); reading text files is cheap next to training.

A file that cannot be read is passed over, as ``--on-bad-sample skip`` (the recipe's) will pass it over.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pairless import modalities as registry
from pairless.batch import TokenSpec
from pairless.data import file_codecs
from pairless.data.validate import Problem, infer_size


def _listing(data: Path, name: str) -> list[str]:
    """The files of one modality in ``data/train`` that its extensions accept, in the reader's order."""
    from pairless.data.folder import walk_files

    extensions = registry.get(name).extensions
    return [absolute for relative, absolute in walk_files(data / "train" / name)
            if os.path.splitext(relative)[1].lower() in extensions]


def _first_image_size(data: Path, names: list[str]) -> tuple[int, Path] | None:
    for name in names:
        entry = registry.get(name)
        for path in _listing(data, name):
            try:
                return infer_size(entry, file_codecs.decode_checked(entry, Path(path)).shape), Path(path)
            except (Problem, OSError, ValueError):
                continue
    return None


def _texts(data: Path, name: str, limit: int | None) -> list[str]:
    entry, texts = registry.get(name), []
    for path in _listing(data, name):
        if limit is not None and len(texts) >= limit:
            break
        try:
            texts.append(file_codecs.decode_checked(entry, Path(path)))
        except (Problem, OSError, ValueError):
            continue
    return texts


def folder_specs(data: str | Path, settings,
                 modalities: list[str]) -> tuple[dict[str, TokenSpec], str] | None:
    """The specs the tokenizers trained with ``settings`` (a TokenizerTrainConfig) will give the train split
    of the folder ``data``, and where they come from (one line); None for a dataset that is not in folder
    form (the plan then assumes them)."""
    from pairless.data.folder import modality_folders
    from pairless.tokenizers import text as text_tokenizers

    data = Path(data)
    if not (data / "train").is_dir() or (data / "manifest.json").is_file():  # packed: no files to read
        return None
    present = [name for name, _ in modality_folders(data / "train")]
    names = [name for name in present if name in modalities]  # in the reader's (registry) order
    images = [name for name in names if registry.get(name).kind == "image"]
    found = _first_image_size(data, images) if images else None
    spatial, vector, specs, parts = settings.spatial, settings.vector, {}, []
    if found is not None:
        size, path = found
        side = size // spatial.downsample
        parts.append(f"images {size}x{size} (as {path.relative_to(data)}) / {spatial.downsample} = "
                     f"{side * side} tokens")
    texts = {name: _texts(data, name, settings.max_train_samples) for name in names
             if registry.get(name).is_text}
    vocabulary = (text_tokenizers.train_vocabulary([text for values in texts.values() for text in values],
                                                   settings.text.vocab_size) if texts else None)
    for name in names:
        entry = registry.get(name)
        if entry.kind == "image" and found is not None:
            vocab = math.prod(spatial.modality_levels.get(name, spatial.levels))
            specs[name] = TokenSpec(name, "image", side * side, vocab, grid=(side, side))
        elif entry.kind == "vector":
            specs[name] = TokenSpec(name, "vector", vector.num_tokens, math.prod(vector.levels))
        elif entry.is_text and texts[name]:
            length = text_tokenizers.padded_length(vocabulary, texts[name], settings.text.length_margin)
            specs[name] = TokenSpec(name, "sequence", length, vocabulary.get_vocab_size(),
                                    pad_id=text_tokenizers.PAD_ID, bos_id=text_tokenizers.BOS_ID,
                                    eos_id=text_tokenizers.EOS_ID)
            parts.append(f"{name} {length} tokens (its {len(texts[name]):,} train texts through the "
                         "vocabulary the tokenizers will build)")
    source = (f"from {data}/train, read as the tokenizers will: {'; '.join(parts) or 'no image or text'} "
              "(exact once the shards exist)")
    return specs, source
