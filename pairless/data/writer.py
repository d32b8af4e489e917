"""Write a dataset (splits of natural-form samples) in the folder or the packed form.

Both forms are built in a staging folder (:func:`pairless.utils.storage.staged_dir`)
and published with ``COMPLETE.json`` only when every file is written, so a
killed write never leaves a folder that looks complete. The layouts are
described in ``docs/interfaces.md`` ("Dataset on disk").
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pairless import modalities as registry
from pairless.data import file_codecs
from pairless.data.validate import DataError, Problem, check_array_column, check_text_column, infer_size
from pairless.utils.storage import atomic_save_npy, atomic_write_json, is_complete, staged_dir

SCHEMA_VERSION = 1
SCENE_FOLDER = "_scene"


@dataclass
class SplitData:
    """One split in natural form.

    ``columns[modality]`` is an array ``[N, ...]`` (images, vectors) or a list
    of N strings (text). ``present[modality]`` (bool ``[N]``) says which rows
    hold a value; None, or a modality missing from it, means all present.
    Rows that are not present are placeholders and are never written.
    ``scenes`` is the world's per-sample scene description (JSON-able dicts).
    """

    ids: list[str]
    columns: dict[str, np.ndarray | list[str]]
    present: dict[str, np.ndarray] | None = None
    scenes: list[dict] | None = None

    def present_mask(self, modality: str) -> np.ndarray:
        if self.present is None or modality not in self.present:
            return np.ones(len(self.ids), dtype=bool)
        return np.asarray(self.present[modality], dtype=bool)


def _check_id(sample_id: str, where: str) -> None:
    parts = sample_id.split("/")
    if not sample_id or sample_id.startswith("/") or any(part in ("", ".", "..") for part in parts) \
            or "\\" in sample_id or "\x00" in sample_id or any(part.startswith(".") for part in parts):
        raise DataError(f"{where}: sample id {sample_id!r} is not a clean relative path")


def _validated(name: str, split: SplitData) -> tuple[dict[str, object], dict[str, np.ndarray], int | None]:
    """Check one split before anything is written; returns (columns, present, image size)."""
    count = len(split.ids)
    if count == 0:
        raise DataError(f"split {name!r}: zero samples")
    if len(set(split.ids)) != count:
        raise DataError(f"split {name!r}: duplicate sample ids")
    for sample_id in split.ids:
        _check_id(sample_id, f"split {name!r}")
    if split.scenes is not None and len(split.scenes) != count:
        raise DataError(f"split {name!r}: {len(split.scenes)} scenes for {count} ids")
    columns: dict[str, object] = {}
    present: dict[str, np.ndarray] = {}
    size = None
    for modality_name in registry.check_names(split.columns, field_name=f"split {name!r} columns"):
        modality = registry.get(modality_name)
        values, mask = split.columns[modality_name], split.present_mask(modality_name)
        where = f"split {name!r}, modality {modality_name!r}"
        if len(values) != count or mask.shape != (count,):
            raise DataError(f"{where}: {len(values)} values / {mask.shape} present mask for {count} ids")
        try:
            if modality.is_text:
                checked, problems = check_text_column(modality, values, mask)
            else:
                values = np.asarray(values)
                if modality.kind == "image" and size is None:
                    size = infer_size(modality, values.shape[1:])
                checked, problems = check_array_column(modality, values, mask, size)
        except Problem as problem:
            raise DataError(f"{where}: {problem}") from None
        if problems:
            row, reason = next(iter(problems.items()))
            raise DataError(f"{where}: row {row} (id {split.ids[row]!r}): {reason}"
                            f" ({len(problems)} bad row(s) in this column)")
        columns[modality_name], present[modality_name] = checked, mask
    return columns, present, size


def _write_folder_split(folder: Path, split: SplitData, columns: dict, present: dict) -> None:
    for modality_name, values in columns.items():
        modality = registry.get(modality_name)
        suffix = file_codecs.extension(modality)
        rows = np.flatnonzero(present[modality_name])
        for row in tqdm(rows, desc=f"{folder.name}/{modality_name}", disable=None, leave=False):
            path = folder / modality_name / (split.ids[row] + suffix)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Plain writes are enough: the whole tree is staged and published atomically.
            path.write_bytes(file_codecs.encode(modality, values[row]))
    if split.scenes is not None:
        for sample_id, scene in zip(split.ids, split.scenes, strict=True):
            if scene is None:
                continue
            path = folder / SCENE_FOLDER / (sample_id + ".json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(scene, sort_keys=True, default=str), encoding="utf-8")


def _write_packed_split(folder: Path, split: SplitData, columns: dict, present: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "ids.json", list(split.ids))
    for modality_name, values in columns.items():
        if registry.get(modality_name).is_text:
            # Fixed-width unicode (never an object array, which would need pickle); at least U1.
            values = np.array(values, dtype=f"<U{max(1, max(len(text) for text in values))}")
        atomic_save_npy(folder / f"{modality_name}.npy", values)
        atomic_save_npy(folder / f"{modality_name}.present.npy", present[modality_name])
    if split.scenes is not None:
        atomic_write_json(folder / "scene.json", list(split.scenes))


def content_hash(splits: dict[str, SplitData], validated: dict) -> str:
    """SHA-256 of the data itself (ids, present values, scenes), the same for both forms."""
    digest = hashlib.sha256()
    for name in sorted(splits):
        split, (columns, present, _) = splits[name], validated[name]
        digest.update(json.dumps([name, list(split.ids)]).encode())
        for modality_name in sorted(columns):
            mask = present[modality_name]
            digest.update(modality_name.encode() + b"\0" + np.packbits(mask).tobytes())
            values = columns[modality_name]
            if isinstance(values, list):
                digest.update(json.dumps([text for text, keep in zip(values, mask, strict=True)
                                          if keep]).encode())
            else:
                digest.update(str(values.dtype).encode() + np.ascontiguousarray(values[mask]).tobytes())
        digest.update(json.dumps(split.scenes, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def write_dataset(
    root: str | os.PathLike,
    splits: dict[str, SplitData],
    form: str = "packed",
    config: dict | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Validate ``splits`` and write them under ``root`` in ``form`` ("packed" or "folder").

    ``config`` (the generating config, JSON-able) is recorded in
    ``manifest.json``. Refuses to replace an existing complete dataset unless
    ``overwrite``, and never replaces a folder pairless did not write (a user's
    data folder has no ``COMPLETE.json``). Returns the published root.
    """
    root = Path(root)
    if form not in ("packed", "folder"):
        raise ValueError(f"write_dataset: form must be 'packed' or 'folder', got {form!r}")
    if not splits:
        raise DataError(f"{root}: no splits to write")
    if root.exists() and any(root.iterdir()) and not is_complete(root):
        raise FileExistsError(f"{root} exists and was not written by pairless (no COMPLETE.json); "
                              "refusing to replace it: choose another folder or remove it yourself")
    if is_complete(root) and not overwrite:
        raise FileExistsError(f"{root} already holds a complete dataset (pass overwrite=True to replace it)")
    validated = {name: _validated(name, split) for name, split in splits.items()}
    with staged_dir(root, {"kind": "dataset", "format": form}, overwrite=overwrite) as staging:
        for name, split in splits.items():
            columns, present, _ = validated[name]
            writer = _write_packed_split if form == "packed" else _write_folder_split
            writer(staging / name, split, columns, present)
        manifest = {
            "format": form,
            "schema_version": SCHEMA_VERSION,
            "splits": {
                name: {
                    "count": len(split.ids),
                    "modalities": list(validated[name][0]),
                    "present": {m: int(mask.sum()) for m, mask in validated[name][1].items()},
                    "size": validated[name][2],
                }
                for name, split in splits.items()
            },
            "config": config,
            "content_hash": content_hash(splits, validated),
        }
        atomic_write_json(staging / "manifest.json", manifest)
    return root
