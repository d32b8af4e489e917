"""Streamed token shards: the token shards as webdataset tar files, for data that need not sit on one disk.

Layout (ml-4m's convention: one tar set per modality, so a modality can be added or fetched alone)::

    SHARDS/manifest.json                          format "webdataset", schema_version, modalities
                                                  {name: TokenSpec}, shard_samples, splits {split:
                                                  {num_samples, shards: [samples per shard]}}, info
    SHARDS/<split>/index/shard-NNNNNN.json        ids, presence, pseudo marks and sequence lengths of the
                                                  shard's samples (small: what fragmentation needs)
    SHARDS/<split>/<modality>/shard-NNNNNN.tar    one member ``<position>.npy`` (int32 [L]) per sample
                                                  that has the modality; position = row in the split
    SHARDS/COMPLETE.json

Shard k of a split holds its rows ``[k * shard_samples, (k + 1) * shard_samples)``: the same rows as the
packed shards it was written from (:func:`write_streamed`), so that training in shard order
(``TrainConfig.data_order="shards"``) sees the same batches from either form. ``SHARDS`` may be a local
folder or a URL that webdataset's ``gopen`` opens (``http://...``, ``pipe:...``): training then reads each
shard's tars front to back, never the whole dataset at once.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pairless.batch import TokenSpec
from pairless.data.shards import SCHEMA_VERSION, open_shards, read_manifest, specs_from_manifest
from pairless.data.validate import DataError
from pairless.utils.storage import atomic_write_bytes, atomic_write_json, staged_dir

FORMAT = "webdataset"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


def _location(root, *parts: str) -> str:
    """A path under ``root`` (a folder or a URL) as a string gopen accepts."""
    root = re.sub(r"^(https?):/(?!/)", r"\1://", str(root))  # a URL that went through pathlib.Path
    return "/".join([root.rstrip("/"), *parts]) if "://" in root or root.startswith("pipe:") \
        else str(Path(root, *parts))


def _read_bytes(location: str) -> bytes:
    import webdataset

    with webdataset.gopen(location, "rb") as stream:
        return stream.read()


def is_streamed(root) -> bool:
    """Whether ``root`` holds streamed (webdataset) token shards."""
    try:
        manifest = json.loads(_read_bytes(_location(root, "manifest.json")))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def write_streamed(source, out, shard_samples: int = 1000) -> Path:
    """Write the packed token shards ``source`` as streamed shards under ``out`` (every split)."""
    import webdataset

    if shard_samples < 1:
        raise ValueError(f"shard_samples: must be at least 1, got {shard_samples}")
    manifest = read_manifest(source)
    out = Path(out)
    splits = {}
    with staged_dir(out, {"kind": "token_shards", "format": FORMAT}) as staging:
        for split in manifest["splits"]:
            data = open_shards(source, split)
            count = len(data.ids)
            sizes = [min(shard_samples, count - start) for start in range(0, count, shard_samples)]
            splits[split] = {"num_samples": count, "shards": sizes}
            (staging / split / "index").mkdir(parents=True)
            for name in data.specs:
                (staging / split / name).mkdir()
            for shard, start in enumerate(tqdm(range(0, count, shard_samples), desc=f"webdataset {split}",
                                               disable=None, leave=False)):
                rows = np.arange(start, min(start + shard_samples, count))
                index = {"ids": [data.ids[row] for row in rows],
                         "present": {name: np.asarray(data.present[name][rows], bool).tolist()
                                     for name in data.specs},
                         "pseudo": {name: np.asarray(data.pseudo[name][rows], bool).tolist()
                                    for name in data.specs if data.pseudo[name][rows].any()},
                         "lengths": {name: (np.asarray(data.tokens[name][rows]) != spec.pad_id)
                                     .sum(1).tolist()
                                     for name, spec in data.specs.items() if spec.kind == "sequence"}}
                atomic_write_json(staging / split / "index" / f"{shard_name(shard)}.json", index)
                for name in data.specs:
                    buffer = io.BytesIO()
                    with webdataset.TarWriter(buffer) as writer:
                        for row in rows[np.asarray(data.present[name][rows], bool)]:
                            writer.write({"__key__": f"{row:09d}",
                                          "npy": np.asarray(data.tokens[name][row], dtype=np.int32)})
                    atomic_write_bytes(staging / split / name / f"{shard_name(shard)}.tar", buffer.getvalue())
        atomic_write_json(staging / "manifest.json", {
            **data.info, "format": FORMAT, "schema_version": SCHEMA_VERSION, "shard_samples": shard_samples,
            "modalities": manifest["modalities"], "splits": splits})
        for name in ("modalities.json",):  # the declared modalities travel with the shards
            if (Path(source) / name).is_file():
                atomic_write_bytes(staging / name, (Path(source) / name).read_bytes())
        if (Path(source) / "tokenizers").is_dir():  # an importer's text tokenizers (import-4m-data)
            shutil.copytree(Path(source) / "tokenizers", staging / "tokenizers")
    return out


class StreamedShards:
    """One split of streamed shards: the manifest and shard indexes up front, tokens shard by shard."""

    def __init__(self, root, split: str):
        self.root, self.split = root, split
        location = _location(root, "manifest.json")
        try:
            manifest = json.loads(_read_bytes(location))
        except (OSError, ValueError) as error:
            raise DataError(f"{location}: cannot read the streamed shards' manifest ({error})") from None
        if manifest.get("format") != FORMAT or manifest.get("schema_version") != SCHEMA_VERSION:
            raise DataError(f"{location}: not a manifest of streamed token shards (format {FORMAT})")
        if split not in manifest["splits"]:
            raise DataError(f"{location}: no split {split!r}; splits: "
                            f"{', '.join(sorted(manifest['splits']))}")
        if "://" not in _location(root) and not str(root).startswith("pipe:") and Path(root).is_dir():
            from pairless.data.declared import declare_from

            declare_from(Path(root))
        self.manifest = manifest
        self.shard_samples = int(manifest["shard_samples"])
        self.sizes = [int(size) for size in manifest["splits"][split]["shards"]]
        self.specs: dict[str, TokenSpec] = specs_from_manifest(manifest, location)

    def index(self, shard: int) -> dict:
        """The shard's index: ids, presence, pseudo marks, sequence lengths."""
        location = _location(self.root, self.split, "index", f"{shard_name(shard)}.json")
        try:
            data = json.loads(_read_bytes(location))
        except (OSError, ValueError) as error:
            raise DataError(f"{location}: unreadable shard index ({error})") from None
        if len(data.get("ids", [])) != self.sizes[shard]:
            raise DataError(f"{location}: {len(data.get('ids', []))} ids, the manifest says "
                            f"{self.sizes[shard]}")
        return data

    def metadata(self) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Every sample's id, presence [N, M], pseudo marks [N, M] and sequence lengths {name: [N]}."""
        ids, present, pseudo, lengths = [], [], [], {}
        names = list(self.specs)
        for shard in range(len(self.sizes)):
            data = self.index(shard)
            ids += data["ids"]
            present.append(np.array([data["present"][name] for name in names], dtype=bool).T)
            pseudo.append(np.array([data.get("pseudo", {}).get(name, [False] * len(data["ids"]))
                                    for name in names], dtype=bool).T)
            for name, values in data.get("lengths", {}).items():
                lengths.setdefault(name, []).extend(values)
        width = len(names)
        return (ids, np.concatenate(present) if present else np.zeros((0, width), bool),
                np.concatenate(pseudo) if pseudo else np.zeros((0, width), bool),
                {name: np.asarray(values, dtype=np.int64) for name, values in lengths.items()})

    def read(self, shard: int, modalities: list[str]) -> dict[str, np.ndarray]:
        """Tokens ``{modality: int32 [size, L]}`` of one shard (absent samples: 0), read front to back.

        A tar that does not hold every sample its index marks present (cut short, also between two members,
        where tarfile stops without an error) or holds a member that is not a token row of this shard
        raises a DataError naming the tar and the member: training on it would silently read zeros.
        """
        start, size = shard * self.shard_samples, self.sizes[shard]
        present = self.index(shard)["present"]
        out = {}
        for name in modalities:
            location = _location(self.root, self.split, name, f"{shard_name(shard)}.tar")
            tokens, found, last = self._read_tar(location, name, start, size)
            expected = np.flatnonzero(np.asarray(present.get(name, [False] * size), bool))
            missing = np.setdiff1d(expected, found)
            if len(missing):
                raise DataError(f"{location}: cut short after {last}: {len(missing)} of the {len(expected)} "
                                f"samples its index marks present are missing (first: member "
                                f"{start + missing[0]:09d}.npy); write the shards again "
                                "(pairless tokenize --format webdataset)")
            out[name] = tokens
        return out

    def _read_tar(self, location: str, name: str, start: int, size: int
                  ) -> tuple[np.ndarray, np.ndarray, str]:
        """(tokens [size, L], the rows read, the last member read, as words) of one modality's tar."""
        import webdataset

        tokens = np.zeros((size, self.specs[name].num_tokens), dtype=np.int32)
        found, last = [], "its start"
        try:
            with webdataset.gopen(location, "rb") as stream:
                for member in webdataset.tariterators.tar_file_iterator(stream):
                    where = f"{location}: member {member['fname']}"
                    try:
                        row = int(member["fname"].split(".")[0]) - start
                        value = np.load(io.BytesIO(member["data"]), allow_pickle=False)
                    except ValueError as error:
                        raise DataError(f"{where}: not a token array ({error})") from None
                    if not 0 <= row < size or value.shape != tokens.shape[1:]:
                        raise DataError(f"{where}: not a token row of this shard (rows {start}.."
                                        f"{start + size - 1}, {tokens.shape[1]} tokens; found shape "
                                        f"{list(value.shape)})")
                    tokens[row] = value
                    found.append(row)
                    last = f"member {member['fname']}"
        except DataError:
            raise
        except (OSError, ValueError, EOFError, tarfile.TarError) as error:
            raise DataError(f"{location}: cut short or unreadable after {last} ({type(error).__name__}: "
                            f"{error})") from None
        return tokens, np.asarray(found, dtype=np.int64), last
