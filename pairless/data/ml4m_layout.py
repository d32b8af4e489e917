"""ml-4m's on-disk dataset layout, read member by member (what ``pairless import-4m-data`` imports).

ml-4m (github.com/apple/ml-4m, its README_DATA) keeps one folder per modality under a split folder, either as
webdataset tar shards or as plain files::

    ROOT/<split>/<modality>/shard-00000.tar     members <key>.<ext>, one per sample
    ROOT/<split>/<modality>/<sub>/<key>.<ext>   the same as files (any sub-folders)
    ROOT/<split>/crop_settings/...              the crops the tokens were made from (crop 0: the centre)

A sample is the set of files with the same key in the modality folders (the path without its extension, as
webdataset names samples: up to the first dot of the file name). A folder name is the ml-4m modality name
(``tok_rgb@224``) unless a name map says otherwise (ml-4m's ``modality_name_map``, e.g. the
``rgb_dvae_BUa_224`` folders its ``save_vq_tokens.py`` writes). Nothing here decodes a member: that is the
importer's job (:mod:`pairless.tokenizers.ml4m_data`).
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CROP_SETTINGS = "crop_settings"
# ml-4m modality names -> pairless names, grids, vocabularies, text forms: shared by import-4m (model/ml4m.py)
# and import-4m-data; kept beside the model code that documents it
MAPPING_FILE = Path(__file__).resolve().parents[1] / "model" / "ml4m_modalities.json"


class MappingError(ValueError):
    """The modality mapping file cannot be used (named)."""


def read_mapping(path: Path | None = None) -> dict:
    """The modality mapping file (default: pairless/model/ml4m_modalities.json)."""
    path = Path(path) if path is not None else MAPPING_FILE
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise MappingError(f"{path}: cannot read the ml-4m modality mapping ({error})") from error
    for key in ("text", "modalities"):
        if not isinstance(mapping.get(key), dict):
            raise MappingError(f"{path}: no {key!r} table")
    mapping.setdefault("unsupported_inputs", {})
    return mapping


@dataclass
class Member:
    """One file of one sample: its key, where it is (for messages), its extension and its bytes."""

    key: str
    where: str
    extension: str
    data: bytes


@dataclass
class BadShard:
    """A tar shard that could not be read to its end: the members after ``where`` are lost."""

    where: str
    reason: str


def split_name(name: str) -> tuple[str, str]:
    """``"a/b/000123.tok.npy"`` -> (``"a/b/000123"``, ``"tok.npy"``): webdataset's rule for sample keys."""
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (extension if dot else "")


def _numbered(path: Path):
    """Sort key putting ``shard-2.tar`` before ``shard-10.tar``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def tar_shards(folder: Path) -> list[Path]:
    return sorted((path for path in folder.iterdir() if path.is_file() and path.name.endswith(".tar")),
                  key=_numbered)


def read_members(folder: Path) -> Iterator[Member | BadShard]:
    """Every member of one modality folder: its tar shards in order, or else its files (sorted)."""
    shards = tar_shards(folder)
    if shards:
        for shard in shards:
            last = "its start"
            try:
                with tarfile.open(shard, "r:*") as archive:
                    for info in archive:
                        if not info.isfile():
                            continue
                        last = f"member {info.name}"
                        handle = archive.extractfile(info)
                        data = handle.read() if handle is not None else b""
                        if len(data) != info.size:
                            raise tarfile.ReadError(f"{info.name}: {len(data)} of {info.size} bytes")
                        key, extension = split_name(info.name)
                        yield Member(key, f"{shard} member {info.name}", extension, data)
                    end = archive.offset
                # tarfile stops without an error at a header cut short: what follows the last member must
                # be the end-of-archive zero blocks, or members were lost
                with open(shard, "rb") as handle:
                    handle.seek(end)
                    rest = handle.read()
                if len(rest) < 1024 or rest.strip(b"\0"):
                    raise tarfile.ReadError("the archive is cut short or has bytes after its last member "
                                            "(no end-of-archive blocks)")
            except (tarfile.TarError, OSError, EOFError, ValueError) as error:
                yield BadShard(f"{shard} after {last}", f"unreadable tar ({type(error).__name__}: {error})")
        return
    files = []
    for directory, subfolders, names in os.walk(folder):
        subfolders.sort()
        files += [Path(directory, name) for name in names if not name.startswith(".")]
    for path in sorted(files):
        key, extension = split_name(path.relative_to(folder).as_posix())
        try:
            data = path.read_bytes()
        except OSError as error:
            yield BadShard(str(path), f"unreadable file ({error})")
            continue
        yield Member(key, str(path), extension, data)


def modality_folders(split_folder: Path, known: set[str], folder_names: dict[str, str]) -> dict[str, Path]:
    """ml-4m modality name -> its folder in one split folder (names mapped by ``folder_names``)."""
    found = {}
    for path in sorted(split_folder.iterdir()):
        if not path.is_dir():
            continue
        name = folder_names.get(path.name, path.name)
        if name in known:
            if name in found:
                raise ValueError(f"{split_folder}: folders {found[name].name} and {path.name} both hold "
                                 f"modality {name!r}")
            found[name] = path
    return found


def find_splits(root: Path, known: set[str], folder_names: dict[str, str], split: str) -> dict[str, Path]:
    """Split name -> split folder: ``root`` itself (named ``split``) when it holds modality folders, else
    each sub-folder of ``root`` that does (``train/``, ``val/``...)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    if modality_folders(root, known, folder_names):
        return {split: root}
    splits = {path.name: path for path in sorted(root.iterdir())
              if path.is_dir() and modality_folders(path, known, folder_names)}
    if not splits:
        children = ", ".join(sorted(path.name for path in root.iterdir() if path.is_dir())) or "none"
        raise FileNotFoundError(f"{root}: no ml-4m modality folder here or in a split folder under it "
                                f"(folders: {children}; known modalities: {', '.join(sorted(known))}; a "
                                "folder with another name needs --folder FOLDER=MODALITY)")
    return splits
