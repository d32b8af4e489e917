"""Token shards: the tokenized dataset that training and evaluation read.

Layout (see ``docs/interfaces.md``, "Token shards")::

    SHARDS/manifest.json            schema_version, modalities {name: TokenSpec dict},
                                    splits {split: num_samples}, plus the writer's info
    SHARDS/<split>/<modality>.npy           int32 [N, L]; absent samples are all 0
    SHARDS/<split>/<modality>.present.npy   bool [N]
    SHARDS/<split>/<modality>.pseudo.npy    bool [N], optional: tokens a model generated (pseudo-pairs),
                                            never real data; absent = all real
    SHARDS/<split>/ids.json                 N sample ids
    SHARDS/<split>/scene.json               N scenes (world data only)
    SHARDS/COMPLETE.json

``write_shards`` validates before writing and publishes through
``staged_dir``; ``open_shards`` memory-maps the token arrays and checks them
against the specs (shape, dtype, token ids inside ``[0, vocab_size)`` for
present samples), naming the file in every error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pairless import modalities as registry
from pairless.batch import TokenSpec
from pairless.data.declared import declare_from, record_declared
from pairless.data.validate import DataError
from pairless.utils.storage import (
    atomic_save_npy,
    atomic_write_json,
    is_complete,
    load_array,
    read_json,
    staged_dir,
)

SCHEMA_VERSION = 1
_RESERVED = ("schema_version", "modalities", "splits")


@dataclass
class ShardSplit:
    """One split to write: ids, int tokens ``[N, L]`` and a bool present mask ``[N]`` per modality."""

    ids: list[str]
    tokens: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    scenes: list[dict] | None = None
    # modality -> bool [N]: samples whose tokens a model generated (a subset of present); omitted = none
    pseudo: dict[str, np.ndarray] | None = None


@dataclass
class TokenShards:
    """One split read back: ``tokens`` are read-only memory maps."""

    root: Path
    split: str
    specs: dict[str, TokenSpec]
    tokens: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    ids: list[str]
    scenes: list[dict] | None = None
    info: dict = dataclasses.field(default_factory=dict)
    # modality -> bool [N]: model-generated tokens (pseudo-pairs); all False for modalities without a file
    pseudo: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)


def spec_to_dict(spec: TokenSpec) -> dict:
    data = dataclasses.asdict(spec)
    if data["grid"] is not None:
        data["grid"] = list(data["grid"])
    return data


def spec_from_dict(data: dict, where: str = "") -> TokenSpec:
    names = {field.name for field in dataclasses.fields(TokenSpec)}
    if not isinstance(data, dict) or not names >= set(data) or "name" not in data:
        raise DataError(f"{where}: not a TokenSpec ({data!r}); fields: {', '.join(sorted(names))}")
    data = dict(data)
    if data.get("grid") is not None:
        data["grid"] = tuple(int(side) for side in data["grid"])
    return TokenSpec(**data)


def _check_tokens(tokens: np.ndarray, present: np.ndarray, spec: TokenSpec, count: int, where: str) -> None:
    """Shape, dtype and id-range checks shared by the writer and the reader."""
    if tokens.ndim != 2 or tokens.shape != (count, spec.num_tokens):
        raise DataError(f"{where}: tokens of shape {list(tokens.shape)}, expected [{count}, "
                        f"{spec.num_tokens}] ({count} ids, num_tokens of {spec.name!r})")
    if tokens.dtype.kind not in "iu":
        raise DataError(f"{where}: tokens of dtype {tokens.dtype}, expected integers (int32)")
    if present.dtype != bool or present.shape != (count,):
        raise DataError(f"{where}: present mask must be bool [{count}], got {present.dtype} "
                        f"{list(present.shape)}")
    rows = np.flatnonzero(present)
    if rows.size:
        # Chunked so that a memory-mapped column is never copied whole.
        for start in range(0, rows.size, 65536):
            chunk = tokens[rows[start:start + 65536]]
            low, high = int(chunk.min()), int(chunk.max())
            if low < 0 or high >= spec.vocab_size:
                bad = rows[start:start + 65536][((chunk < 0) | (chunk >= spec.vocab_size)).any(axis=1)][0]
                raise DataError(f"{where}: row {bad}: token ids in [{low}, {high}] outside "
                                f"[0, {spec.vocab_size}) (vocab_size of {spec.name!r})")


def write_shards(
    root: str | os.PathLike,
    splits: dict[str, ShardSplit],
    specs: dict[str, TokenSpec],
    info: dict,
    *,
    overwrite: bool = False,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Validate and write token shards under ``root``; ``info`` (JSON-able, e.g. the
    tokenizer folder's hash) is stored at the top level of ``manifest.json``. ``extra(staging)`` writes
    more into the folder before it is published (an importer's tokenizer folder)."""
    root = Path(root)
    clash = sorted(set(info) & set(_RESERVED))
    if clash:
        raise ValueError(f"write_shards: info keys {clash} are reserved for the manifest")
    for name, spec in specs.items():
        if spec.name != name:
            raise ValueError(f"write_shards: specs[{name!r}] is named {spec.name!r}")
    if not splits:
        raise DataError(f"{root}: no splits to write")
    prepared: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for split_name, split in splits.items():
        count = len(split.ids)
        if count == 0:
            raise DataError(f"shard split {split_name!r}: zero samples")
        if split.scenes is not None and len(split.scenes) != count:
            raise DataError(f"shard split {split_name!r}: {len(split.scenes)} scenes for {count} ids")
        unknown = sorted(set(split.tokens) - set(specs))
        missing = sorted(set(specs) - set(split.tokens))
        if unknown or missing or set(split.present) != set(split.tokens):
            raise DataError(f"shard split {split_name!r}: modalities {sorted(split.tokens)} with present "
                            f"masks for {sorted(split.present)} do not match the specs {sorted(specs)}")
        prepared[split_name] = {}
        for name, spec in specs.items():
            tokens, present = np.asarray(split.tokens[name]), np.asarray(split.present[name])
            _check_tokens(tokens, present, spec, count, f"shard split {split_name!r}, modality {name!r}")
            tokens = tokens.astype(np.int32)
            tokens[~present] = 0  # the documented filler for absent samples
            prepared[split_name][name] = (tokens, present)
        for name, pseudo in (split.pseudo or {}).items():
            pseudo = np.asarray(pseudo)
            where = f"shard split {split_name!r}, modality {name!r}"
            if name not in specs or pseudo.dtype != bool or pseudo.shape != (count,):
                raise DataError(f"{where}: a pseudo mask must be bool [{count}] of a known modality, got "
                                f"{pseudo.dtype} {list(pseudo.shape)}")
            if (pseudo & ~prepared[split_name][name][1]).any():
                raise DataError(f"{where}: {int((pseudo & ~prepared[split_name][name][1]).sum())} samples "
                                "are marked pseudo but not present")
    manifest = {
        **info,
        "schema_version": SCHEMA_VERSION,
        "modalities": {name: spec_to_dict(spec) for name, spec in specs.items()},
        "splits": {name: len(split.ids) for name, split in splits.items()},
    }
    with staged_dir(root, {"kind": "token_shards"}, overwrite=overwrite) as staging:
        for split_name, split in splits.items():
            folder = staging / split_name
            folder.mkdir()
            atomic_write_json(folder / "ids.json", list(split.ids))
            for name, (tokens, present) in tqdm(prepared[split_name].items(), desc=f"shards {split_name}",
                                                disable=None, leave=False):
                atomic_save_npy(folder / f"{name}.npy", tokens)
                atomic_save_npy(folder / f"{name}.present.npy", present)
            for name, pseudo in (split.pseudo or {}).items():
                atomic_save_npy(folder / f"{name}.pseudo.npy", np.asarray(pseudo, dtype=bool))
            if split.scenes is not None:
                atomic_write_json(folder / "scene.json", list(split.scenes))
        atomic_write_json(staging / "manifest.json", manifest)
        record_declared(specs, staging)  # what reads the shards knows the declared modalities
        if extra is not None:
            extra(staging)
    return root


def read_manifest(root: str | os.PathLike) -> dict:
    """The shards' manifest, after checking that the folder was completely written."""
    root = Path(root)
    if not (root / "manifest.json").is_file():
        raise DataError(f"{root}: no token shards here (no manifest.json)")
    if not is_complete(root):
        raise DataError(f"{root}: token shards are incomplete (killed mid-write?): no COMPLETE.json; "
                        "run 'pairless tokenize' again")
    manifest = read_json(root / "manifest.json")
    if isinstance(manifest, dict) and manifest.get("format") in ("packed", "folder"):
        raise DataError(f"{root}: this is a dataset, not token shards; make shards with 'pairless tokenize'")
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{root / 'manifest.json'}: not a token-shard manifest of schema_version "
                        f"{SCHEMA_VERSION}")
    return manifest


def specs_from_manifest(manifest: dict, where) -> dict[str, TokenSpec]:
    """The manifest's specs in the built-ins' order, every other name after them by name: JSON sorts the
    keys, and every process must see the same order, whatever was registered first."""
    order = {name: index for index, name in enumerate(registry.WORLD_MODALITIES)}
    stored = sorted(manifest.get("modalities", {}).items(),
                    key=lambda item: (order.get(item[0], len(order)), item[0]))
    return {name: spec_from_dict(data, f"{where} modality {name!r}") for name, data in stored}


def open_shards(root: str | os.PathLike, split: str) -> TokenShards:
    """Open one split of token shards (memory-mapped) and validate it against the specs."""
    root = Path(root)
    manifest = read_manifest(root)
    declare_from(root)  # modalities declared with the data: the shards keep a copy of the declaration
    splits = manifest.get("splits", {})
    if split not in splits:
        raise DataError(f"{root / 'manifest.json'}: no split {split!r}; splits: {', '.join(sorted(splits))}")
    specs = specs_from_manifest(manifest, root / "manifest.json")
    folder = root / split
    ids = read_json(folder / "ids.json") if (folder / "ids.json").is_file() else None
    if not isinstance(ids, list) or len(ids) != splits[split]:
        raise DataError(f"{folder / 'ids.json'}: missing or not a list of {splits[split]} ids")
    tokens: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    pseudo: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        token_path, present_path = folder / f"{name}.npy", folder / f"{name}.present.npy"
        for path in (token_path, present_path):
            if not path.is_file():
                raise DataError(f"{path}: missing file")
        try:
            tokens[name] = load_array(token_path, mmap=True)
            present[name] = load_array(present_path)
        # noqa: BLE001 - a damaged header raises SyntaxError, tokenize.TokenError, ...
        except Exception as error:
            raise DataError(f"{folder}/{name}: unreadable .npy ({type(error).__name__}: {error})") from None
        if present[name].dtype != bool or present[name].shape != (len(ids),):
            raise DataError(f"{present_path}: expected bool [{len(ids)}], "
                            f"got {present[name].dtype} {list(present[name].shape)}")
        _check_tokens(tokens[name], present[name], spec, len(ids), str(token_path))
        pseudo_path = folder / f"{name}.pseudo.npy"
        pseudo[name] = np.zeros(len(ids), dtype=bool)
        if pseudo_path.is_file():
            try:
                pseudo[name] = load_array(pseudo_path)
            except Exception as error:  # noqa: BLE001 - as above
                raise DataError(f"{pseudo_path}: unreadable .npy ({type(error).__name__}: {error})") from None
            if pseudo[name].dtype != bool or pseudo[name].shape != (len(ids),) \
                    or (pseudo[name] & ~present[name]).any():
                raise DataError(f"{pseudo_path}: expected bool [{len(ids)}] marking present samples only")
    scenes = read_json(folder / "scene.json") if (folder / "scene.json").is_file() else None
    if scenes is not None and (not isinstance(scenes, list) or len(scenes) != len(ids)):
        raise DataError(f"{folder / 'scene.json'}: expected a list of {len(ids)} scenes")
    info = {key: value for key, value in manifest.items() if key not in _RESERVED}
    return TokenShards(root=root, split=split, specs=specs, tokens=tokens, present=present, ids=ids,
                       scenes=scenes, info=info, pseudo=pseudo)
