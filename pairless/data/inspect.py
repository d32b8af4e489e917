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
from pairless.data.validate import DataError
from pairless.utils.storage import read_json


def presence(root: str | os.PathLike, split: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """(sample ids, {modality: bool [N]}) of one split, from the listing (folder) or the masks (packed)."""
    root = Path(root)
    declare_from(root)
    manifest = root / "manifest.json"
    if manifest.is_file() and read_json(manifest).get("format") == "packed":
        from pairless.data.dataset import open_dataset

        dataset = open_dataset(root, split)
        masks = {name: np.asarray(dataset.present[name], bool) for name in dataset.modalities}
        return list(dataset.ids), masks
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{root}: no split {split!r}")
    files: dict[str, set[str]] = {}
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith((".", "_")) or not entry.is_dir():
            continue
        try:
            extensions = registry.get(entry.name).extensions
        except KeyError:
            raise DataError(f"{entry}: folder {entry.name!r} is not a registered modality; declare it in "
                            f"{root}/modalities.yaml (docs/data.md)") from None
        stems = set()
        for directory, subfolders, names in os.walk(entry):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            relative = os.path.relpath(directory, entry)
            prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            for name in names:
                stem, suffix = os.path.splitext(name)
                if not name.startswith(".") and suffix.lower() in extensions and stem:
                    stems.add(prefix + stem)
        files[entry.name] = stems
    # the built-in modalities in their order, then the others as registered (open_dataset's order)
    order = {name: index for index, name in enumerate(registry.names())}
    files = dict(sorted(files.items(), key=lambda item: order[item[0]]))
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
    ids, present = presence(root, split)
    names = list(present)
    return {"num_samples": len(ids),
            "modalities": {name: int(present[name].sum()) for name in names},
            "pairs": {f"{a}:{b}": int((present[a] & present[b]).sum())
                      for a, b in itertools.combinations(names, 2)}}


def pair_count(counts: dict, a: str, b: str) -> int:
    """Samples with both ``a`` and ``b`` in a :func:`co_occurrence` result (either order)."""
    pairs = counts["pairs"]
    return pairs.get(f"{a}:{b}", pairs.get(f"{b}:{a}", 0))
