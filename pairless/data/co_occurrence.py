"""What a dataset holds, from its file listing alone: samples per modality and per pair of modalities.

``co_occurrence(root, split)`` lists files (folder form) or reads the ``present`` masks (packed form)
without decoding a single value, so it is quick on any folder; files that later prove unreadable are
counted here and named by the commands that read them (``--on-bad-sample``).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np

from pairless import modalities as registry
from pairless.data.declared import declare_from
from pairless.data.folder import modality_folders, walk_files
from pairless.data.validate import DataError
from pairless.utils.storage import read_json


def listed_presence(root: str | os.PathLike, split: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """(sample ids, {modality: bool [N]}) of one split, from the listing (folder) or the masks (packed)."""
    root = Path(root)
    declare_from(root)
    manifest = root / "manifest.json"
    if manifest.is_file() and read_json(manifest).get("format") == "packed":
        from pairless.data.readers import open_dataset

        dataset = open_dataset(root, split)
        masks = {name: np.asarray(dataset.present[name], bool) for name in dataset.modalities}
        return list(dataset.ids), masks
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{root}: no split {split!r}")
    # the folder reader's own listing (registered modalities in registry order, non-hidden files), without
    # decoding: a file counts when its extension is one its modality takes
    files: dict[str, set[str]] = {}
    for name, folder in modality_folders(split_dir):
        extensions = registry.get(name).extensions
        split_names = (os.path.splitext(relative) for relative, _ in walk_files(folder))
        files[name] = {stem for stem, suffix in split_names
                       if suffix.lower() in extensions and os.path.basename(stem)}
    ids = sorted(set().union(*files.values())) if files else []
    index = {sample: row for row, sample in enumerate(ids)}
    present = {}
    for name, stems in files.items():
        mask = np.zeros(len(ids), dtype=bool)
        mask[[index[stem] for stem in stems]] = True
        present[name] = mask
    return ids, present


def co_occurrence(root: str | os.PathLike, split: str) -> dict:
    """``{"num_samples", "modalities": {name: count}, "pairs": {"a:b": count}}`` for one split (each
    unordered pair once, in the modalities' order)."""
    ids, present = listed_presence(root, split)
    names = list(present)
    return {"num_samples": len(ids),
            "modalities": {name: int(present[name].sum()) for name in names},
            "pairs": {f"{a}:{b}": int((present[a] & present[b]).sum())
                      for a, b in itertools.combinations(names, 2)}}


def pair_count(counts: dict, a: str, b: str) -> int:
    """Samples with both ``a`` and ``b`` in a :func:`co_occurrence` result (either order)."""
    pairs = counts["pairs"]
    return pairs.get(f"{a}:{b}", pairs.get(f"{b}:{a}", 0))
