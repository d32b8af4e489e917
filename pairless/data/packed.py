"""Read one split of a packed dataset: memory-mapped ``<modality>.npy`` columns, validated.

Layout (see ``docs/interfaces.md``): ``DIR/manifest.json``, ``DIR/COMPLETE.json``,
and per split ``ids.json``, ``<modality>.npy``, ``<modality>.present.npy``,
``scene.json``. Text columns are fixed-width unicode arrays, never pickled
objects. Errors name the file, and the row and sample id for row problems.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pairless import modalities as registry
from pairless.data.dataset import Dataset
from pairless.data.validate import DataError, Problem, check_array_column, check_text_column
from pairless.utils.storage import load_array, read_json


def _load(path: Path, mmap: bool = True) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: missing file")
    try:
        return load_array(path, mmap=mmap)
    except Exception as error:  # noqa: BLE001 - a damaged header raises SyntaxError, tokenize.TokenError, ...
        raise DataError(f"{path}: unreadable .npy ({type(error).__name__}: {error})") from None


def _unknown_modality(path: Path, name: str) -> DataError:
    return DataError(
        f"{path}: modality {name!r} is not registered; known modalities: {', '.join(registry.names())}. "
        f"Declare it in {path.parent.parent}/modalities.yaml (docs/data.md), or register it with "
        "pairless.modalities.register(Modality(...))"
    )


def read_packed_split(root: Path, split: str, manifest: dict, on_bad_sample: str) -> Dataset:
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or split not in splits:
        known = ", ".join(sorted(splits)) if isinstance(splits, dict) else "none"
        raise DataError(f"{root}/manifest.json: no split {split!r}; splits: {known}")
    entry = splits[split]
    folder = root / split
    ids = read_json(folder / "ids.json") if (folder / "ids.json").is_file() else None
    if not isinstance(ids, list) or not all(isinstance(item, str) for item in ids):
        raise DataError(f"{folder / 'ids.json'}: missing or not a list of sample ids")
    if len(ids) == 0:
        raise DataError(f"{folder}: zero samples in split {split!r}")
    if len(ids) != entry.get("count"):
        raise DataError(f"{folder / 'ids.json'}: {len(ids)} ids but the manifest says {entry.get('count')}")
    count = len(ids)
    columns: dict = {}
    present: dict[str, np.ndarray] = {}
    bad: list[tuple[str, str]] = []
    size = entry.get("size")
    for name in entry.get("modalities", []):
        path = folder / f"{name}.npy"
        try:
            modality = registry.get(name)
        except KeyError:
            raise _unknown_modality(path, name) from None
        values = _load(path)
        mask = _load(folder / f"{name}.present.npy", mmap=False)
        if mask.dtype != bool or mask.shape != (count,):
            raise DataError(f"{folder / f'{name}.present.npy'}: expected bool [{count}], "
                            f"got {mask.dtype} {list(mask.shape)}")
        if values.ndim < 1 or values.shape[0] != count:
            raise DataError(f"{path}: {values.shape[0] if values.ndim else 0} rows for {count} ids")
        try:
            if modality.is_text:
                if values.dtype.kind != "U":
                    raise Problem(f"dtype {values.dtype}, expected a fixed-width unicode array")
                checked, problems = check_text_column(modality, values.tolist(), mask)
            else:
                checked, problems = check_array_column(modality, values, mask, size)
        except Problem as problem:
            raise DataError(f"{path}: {problem}") from None
        if problems:
            if on_bad_sample == "error":
                row, reason = next(iter(problems.items()))
                raise DataError(f"{path}: row {row} (id {ids[row]!r}): {reason}"
                                f" ({len(problems)} bad row(s) in this column)")
            mask = mask.copy()
            for row, reason in problems.items():
                mask[row] = False
                bad.append((f"{path} row {row} (id {ids[row]!r})", reason))
        columns[name], present[name] = (values if modality.is_text else checked), mask
    scenes = None
    if (folder / "scene.json").is_file():
        scenes = read_json(folder / "scene.json")
        if not isinstance(scenes, list) or len(scenes) != count:
            raise DataError(f"{folder / 'scene.json'}: expected a list of {count} scenes")
    return Dataset(root=root, split=split, form="packed", ids=ids, columns=columns, present=present,
                   scenes=scenes, size=size, bad_samples=bad)
