"""Modalities declared next to the data: ``modalities.yaml`` (or ``.yml``, ``.json``, ``.toml``).

A dataset root may hold a declaration of the modalities the package does not know::

    modalities:
      thermal:                 # the folder name of the modality
        kind: image            # image | sequence | vector
        dtype: float32         # numpy dtype of one value (default: uint8 for .png, float32 for .npy)
        extensions: [.npy]     # accepted file extensions, the first one is written
        channels: 0            # 0: a plain (H, W) map; 1, 3, 4: (H, W, C)
        normalization: standard  # how its tokenizer sees it (pairless.tokenizers.normalize)
        value_range: [0, 60]   # optional: values outside are bad samples
        viz: depth             # how figures draw it: rgb | depth | normal | labels | gray | text | vector
      tissue:
        kind: image
        extensions: [.png]
        classes: [background, tumour, stroma, immune]   # a label map (or num_classes: 4)
      rna:
        kind: vector
        dim: 128

Every command that reads the dataset reads the declaration first (:func:`declare_from`), and the
tokenizers and token shards made from it keep a copy (``modalities.json`` in their folder), so later
commands on them need no flag. ``pairless --modalities-file FILE <command> ...`` declares from another
file. A declaration may not redefine a built-in modality, nor one declared differently elsewhere; a wrong
key is refused naming the file and the key, and a sample that contradicts the declaration is refused (or
skipped) naming the sample's file and the declaration's key.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from pairless import modalities as registry
from pairless.config import Config, format_validation_error
from pairless.data.validate import DataError
from pairless.utils.storage import atomic_write_json

FILE_NAMES = ("modalities.yaml", "modalities.yml", "modalities.json", "modalities.toml")
RECORD_NAME = "modalities.json"  # the copy kept in tokenizer and shard folders
BUILT_IN = frozenset(registry.WORLD_MODALITIES)

_CODEC_OF_EXTENSION = {".png": "png", ".jpg": "png", ".jpeg": "png", ".npy": "npy", ".txt": "txt",
                       ".json": "json"}
_VIZ = ("rgb", "depth", "normal", "labels", "gray", "text", "vector")
_NORMALIZATIONS = ("unit_range", "log_standard", "standard", "unit_vector", "labels")


class DeclaredModality(Config):
    """One user modality as written in a declaration file (every key optional but ``kind``)."""

    kind: Literal["image", "sequence", "vector"]
    dtype: str | None = None
    extensions: list[str] | None = None
    channels: Literal[0, 1, 3, 4] = 0
    dim: int = Field(0, ge=0)
    num_classes: int | None = Field(None, ge=2, le=256)
    classes: list[str] | None = None
    normalization: Literal[_NORMALIZATIONS] | None = None  # type: ignore[valid-type]
    value_range: tuple[float, float] | None = None
    viz: Literal[_VIZ] | None = None  # type: ignore[valid-type]
    description: str = ""

    @field_validator("extensions")
    @classmethod
    def _known_extensions(cls, value):
        if value is not None:
            if not value:
                raise ValueError("needs at least one extension")
            for extension in value:
                if extension.lower() not in _CODEC_OF_EXTENSION:
                    allowed = ", ".join(_CODEC_OF_EXTENSION)
                    raise ValueError(f"{extension!r} is not readable; allowed: {allowed}")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        kind = self.kind
        extensions = [e.lower() for e in (self.extensions or [])]
        if kind == "sequence" and extensions and extensions != [".txt"]:
            raise ValueError("a sequence (text) modality is stored as .txt")
        if kind == "vector":
            if self.dim < 1:
                raise ValueError("dim: a vector modality needs its length (dim >= 1)")
            if extensions and extensions != [".npy"]:
                raise ValueError("extensions: a vector modality is stored as .npy")
        if kind == "image" and self.dim:
            raise ValueError("dim: only vector modalities have one (images have channels)")
        if kind != "image" and (self.channels or self.num_classes or self.classes):
            raise ValueError("channels, num_classes and classes are for image modalities")
        classes, count = self.classes, self.num_classes
        if classes is not None and count is not None and len(classes) != count:
            raise ValueError(f"classes lists {len(classes)} names but num_classes is {count}")
        if self.value_range is not None and not self.value_range[0] < self.value_range[1]:
            low, high = self.value_range
            raise ValueError(f"value_range: low {low} must be below high {high}")
        if kind == "image" and any(_CODEC_OF_EXTENSION[e] == "png" for e in extensions):
            if (self.dtype or "uint8") != "uint8":
                raise ValueError("dtype: .png/.jpg images are 8-bit (uint8); store other values as .npy")
            if len({_CODEC_OF_EXTENSION[e] for e in extensions}) > 1:
                raise ValueError("extensions: mix of image files and .npy; one modality has one codec")
        return self

    def to_modality(self, name: str, source: Path) -> registry.Modality:
        kind = self.kind
        defaults = {"image": [".png"] if (self.dtype or "uint8") == "uint8" else [".npy"],
                    "sequence": [".txt"], "vector": [".npy"]}
        extensions = tuple(e.lower() for e in (self.extensions or defaults[kind]))
        codec = _CODEC_OF_EXTENSION[extensions[0]]
        dtype = self.dtype or {"image": "uint8" if codec == "png" else "float32", "sequence": "str",
                               "vector": "float32"}[kind]
        num_classes = self.num_classes or (len(self.classes) if self.classes else None)
        viz = self.viz or {"sequence": "text", "vector": "vector"}.get(kind) or (
            "labels" if num_classes else "rgb" if self.channels in (3, 4) else "gray")
        normalization = self.normalization or ("labels" if num_classes else None)
        extra = {"declared_in": str(source),
                 "declaration": self.model_dump(mode="json", exclude_defaults=True)}
        if self.value_range is not None:
            extra["value_range"] = list(self.value_range)
        if self.classes:
            extra["classes"] = list(self.classes)
        return registry.Modality(name=name, kind=kind, dtype=dtype, codec=codec, extensions=extensions,
                                 channels=self.channels, dim=self.dim, num_classes=num_classes, viz=viz,
                                 description=self.description or "a modality declared with the data",
                                 normalization=normalization, extra=extra)


def _parse(path: Path) -> object:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
    except Exception as error:  # noqa: BLE001 - yaml, toml and json raise their own kinds
        raise DataError(f"{path}: not valid {suffix[1:]} ({type(error).__name__}: {error})") from None
    raise DataError(f"{path}: a modality declaration is .yaml, .yml, .json or .toml, not "
                    f"{suffix or 'no suffix'}")


def read_declaration(path: str | Path) -> list[registry.Modality]:
    """The modalities declared in ``path`` (validated; nothing is registered)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no modality declaration here (not a file)")
    raw = _parse(path)
    if not isinstance(raw, dict) or set(raw) != {"modalities"} or not isinstance(raw["modalities"], dict):
        raise DataError(f"{path}: expected one top-level key 'modalities' mapping each modality name to its "
                        "declaration (see docs/data.md)")
    out = []
    for name, body in raw["modalities"].items():
        key = f"modalities.{name}"
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise DataError(f"{path}: {key}: a modality name is a folder name of letters, digits and _")
        if name in BUILT_IN:
            raise DataError(f"{path}: {key}: {name!r} is a built-in modality and cannot be redeclared; "
                            "remove it from the file or use another name")
        if not isinstance(body, dict):
            raise DataError(f"{path}: {key}: expected a mapping of keys (kind, dtype, ...), got {body!r}")
        try:
            declared = DeclaredModality.model_validate(body)
        except ValidationError as error:
            raise DataError(f"{path}: {format_validation_error(error, key)}") from None
        out.append(declared.to_modality(name, path))
    return out


def declare(path: str | Path) -> list[str]:
    """Register every modality declared in ``path``; returns their names.

    Registering the same declaration again (another command, or its copy in a tokenizer folder) is a
    no-op; a different declaration of a registered name is refused, naming both sources.
    """
    found = read_declaration(path)
    for modality in found:
        try:
            existing = registry.get(modality.name)
        except KeyError:
            existing = None
        if existing is None:
            registry.register(modality)
        elif existing != modality:
            origin = existing.extra.get("declared_in", "the package (built in or registered in Python)")
            raise DataError(f"{path}: modalities.{modality.name}: declared differently from {origin}; "
                            "one name, one declaration")
    return [modality.name for modality in found]


def find_declaration(folder: str | Path) -> Path | None:
    """The declaration file of a dataset root or artifact folder, if it has one (several: an error)."""
    folder = Path(folder)
    found = [folder / name for name in FILE_NAMES if (folder / name).is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: several modality declarations ({', '.join(p.name for p in found)}); "
                        "keep one")
    return found[0] if found else None


def declare_from(folder: str | Path) -> list[str]:
    """Register the declaration found in ``folder`` (none: nothing happens); returns the names."""
    path = find_declaration(folder)
    return declare(path) if path is not None else []


def record_declared(names, folder: str | Path) -> Path | None:
    """Write ``folder/modalities.json`` with the declarations of those of ``names`` that are declared
    modalities (the tokenizers and shards keep it, so that what reads them knows the modalities)."""
    declared = {}
    for name in names:
        try:
            entry = registry.get(name)
        except KeyError:
            continue
        if "declaration" in entry.extra:
            declared[name] = entry.extra["declaration"]
    if not declared:
        return None
    path = Path(folder) / RECORD_NAME
    atomic_write_json(path, {"modalities": declared})
    return path
