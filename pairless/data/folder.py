"""Read one split of a folder-form dataset (the reference implementation's layout).

``DIR/<split>/<modality>/[<subfolder>/]<name>.<ext>``: one subfolder per
registered modality, one file per sample. A sample's id is its path relative
to the modality folder without the extension; samples align across modality
folders by id, and a missing file means the sample lacks that modality.
Folders starting with ``_`` are not modalities (``_scene`` holds the world's
scene JSON); hidden files and folders (``.``) are ignored.

The whole split is decoded and validated when it is opened (with a progress
bar), so errors surface before any training starts and ``column()`` is a
plain lookup; a split must therefore fit in memory. For larger data use the
packed form, which is memory-mapped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pairless import modalities as registry
from pairless.data import file_codecs
from pairless.data.dataset import Dataset, list_splits
from pairless.data.validate import DataError, Problem, check_array_column, infer_size
from pairless.data.writer import SCENE_FOLDER


class _Reader:
    """Reading state of one split: bad samples (skip mode) and the image size with its source file."""

    def __init__(self, on_bad_sample: str):
        self.skip = on_bad_sample == "skip"
        self.bad: list[tuple[str, str]] = []
        self.size: int | None = None
        self.size_source: Path | None = None

    def problem(self, path: Path, reason: str) -> None:
        if not self.skip:
            raise DataError(f"{path}: {reason}")
        self.bad.append((str(path), reason))


def modality_folders(split_dir: Path) -> list[tuple[str, Path]]:
    found = []
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith((".", "_")) or not entry.is_dir():
            continue
        if entry.name not in registry.names():
            raise DataError(
                f"{entry}: folder {entry.name!r} is not a registered modality; known modalities: "
                f"{', '.join(registry.names())}. Declare yours in {split_dir.parent}/modalities.yaml "
                "(docs/data.md), or rename the folder to start with '_' to have it ignored"
            )
        found.append((entry.name, entry))
    order = {name: index for index, name in enumerate(registry.names())}
    return sorted(found, key=lambda item: order[item[0]])


def walk_files(folder: Path) -> list[tuple[str, str]]:
    """(relative posix path, absolute path) of every non-hidden file under ``folder``, sorted.

    ``os.walk`` on strings: pathlib's per-file overhead dominated listing large folders.
    """
    found = []
    for directory, subfolders, filenames in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        relative = os.path.relpath(directory, folder)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        found.extend((prefix + name, os.path.join(directory, name)) for name in filenames
                     if not name.startswith("."))
    return sorted(found)


def _list_files(name: str, folder: Path, reader: _Reader) -> dict[str, Path]:
    """Sample id -> file of one modality folder, checking extensions and duplicates."""
    modality = registry.get(name)
    files: dict[str, Path] = {}
    candidates = walk_files(folder)
    if not candidates:
        raise DataError(f"{folder}: modality folder {name!r} has no samples (remove it if it is unused)")
    for relative, absolute in candidates:
        stem, suffix = os.path.splitext(relative)
        if suffix.lower() not in modality.extensions or not os.path.basename(stem):
            reason = (f"wrong extension {suffix or '(none)'!r} for modality {name!r} "
                      f"(accepted: {', '.join(modality.extensions)})")
            reader.problem(Path(absolute), reason)
            continue
        if stem in files:
            reader.problem(Path(absolute), f"a second file for sample {stem!r} (also {files[stem].name})")
            continue
        files[stem] = Path(absolute)
    return files


def _read_column(name: str, files: dict[str, Path], ids: list[str], reader: _Reader):
    """Decode and validate one modality's files; returns (column, present) or None if nothing is valid."""
    modality = registry.get(name)
    index = {sample_id: row for row, sample_id in enumerate(ids)}
    present = np.zeros(len(ids), dtype=bool)
    values: dict[int, object] = {}
    first: tuple[tuple[int, ...], Path] | None = None
    for sample_id, path in tqdm(files.items(), desc=f"reading {name}", disable=None, leave=False):
        row = index[sample_id]
        try:
            value = file_codecs.decode_checked(modality, path)
            if not modality.is_text:
                if modality.kind == "image" and reader.size is None:
                    reader.size, reader.size_source = infer_size(modality, value.shape), path
                try:
                    checked, problems = check_array_column(modality, value[None], np.ones(1, bool),
                                                           reader.size)
                except Problem as problem:
                    if modality.kind == "image" and reader.size_source not in (None, path):
                        raise Problem(f"{problem}; the size comes from {reader.size_source}") from None
                    raise
                if problems:
                    raise Problem(problems[0])
                value = checked[0]
                if first is not None and value.shape != first[0]:
                    raise Problem(f"shape {value.shape} differs from {first[0]} of {first[1]}")
                first = first or (value.shape, path)
        except Problem as problem:
            reader.problem(path, str(problem))
            continue
        values[row] = value
        present[row] = True
    if not values:
        return None
    if modality.is_text:
        column: object = [values.get(row, "") for row in range(len(ids))]
    else:
        template = next(iter(values.values()))
        column = np.zeros((len(ids), *template.shape), dtype=template.dtype)
        for row, value in values.items():
            column[row] = value
    return column, present


def _read_scenes(folder: Path, ids: list[str], reader: _Reader) -> list[dict | None]:
    scenes: list[dict | None] = []
    for sample_id in ids:
        path = folder / f"{sample_id}.json"
        scene = None
        if path.is_file():
            try:
                scene = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                reader.problem(path, f"unreadable scene JSON ({error})")
        scenes.append(scene)
    return scenes


def read_folder_split(root: Path, split: str, on_bad_sample: str) -> Dataset:
    split_dir = root / split
    if not split_dir.is_dir():
        raise DataError(f"{root}: no split {split!r}; splits found: {', '.join(list_splits(root)) or 'none'}")
    reader = _Reader(on_bad_sample)
    files = {name: _list_files(name, folder, reader) for name, folder in modality_folders(split_dir)}
    ids = sorted(set().union(*files.values())) if files else []
    if not ids:
        raise DataError(f"{split_dir}: zero samples in split {split!r} (expected one folder per modality, "
                        f"named after the registered modalities: {', '.join(registry.names())})")
    columns: dict = {}
    present: dict[str, np.ndarray] = {}
    for name, modality_files in files.items():
        result = _read_column(name, modality_files, ids, reader)
        if result is not None:
            columns[name], present[name] = result
    scene_dir = split_dir / SCENE_FOLDER
    scenes = _read_scenes(scene_dir, ids, reader) if scene_dir.is_dir() else None
    keep = np.logical_or.reduce(list(present.values())) if present else np.zeros(len(ids), dtype=bool)
    if not keep.all():
        # Skip mode dropped every modality of these samples: drop the samples too.
        if not keep.any():
            raise DataError(f"{split_dir}: no valid sample left in split {split!r} "
                            f"({len(reader.bad)} bad file(s), e.g. {reader.bad[0][0]}: {reader.bad[0][1]})")
        rows = np.flatnonzero(keep)
        ids = [ids[row] for row in rows]
        columns = {name: ([column[row] for row in rows] if isinstance(column, list) else column[rows])
                   for name, column in columns.items()}
        present = {name: mask[rows] for name, mask in present.items()}
        scenes = [scenes[row] for row in rows] if scenes is not None else None
    return Dataset(root=root, split=split, form="folder", ids=ids, columns=columns, present=present,
                   scenes=scenes, size=reader.size, bad_samples=reader.bad)
