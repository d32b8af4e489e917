"""The modality registry: the single source of truth for what a modality is.

Every other stage (data loading, tokenizers, masking, model, evaluation,
visualisation) looks modalities up here by their string key. Adding a
modality means registering one :class:`Modality` entry, e.g.::

    register(Modality(name="histology", kind="image", channels=1, dtype="uint8",
                      extensions=(".png",), codec="png", viz="gray"))

Natural (untokenized) forms, at image size ``S``:

==========  ========  =====================  =====================================
name        kind      value                   file
==========  ========  =====================  =====================================
rgb         image     uint8  (S, S, 3)        .png / .jpg
depth       image     float32 (S, S), >0      .npy
normal      image     uint8  (S, S, 3)        .png  ((n + 1) / 2 * 255, camera space)
semseg      image     uint8  (S, S) class id  .png  (8-bit grey)
det         sequence  str (boxes as text)     .txt
caption     sequence  str                     .txt
embed       vector    float32 (D,)            .npy
==========  ========  =====================  =====================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, NamedTuple

from pydantic import AfterValidator

Kind = Literal["image", "sequence", "vector"]
Codec = Literal["png", "npy", "txt", "json"]


@dataclass(frozen=True)
class Modality:
    """One modality: how it is stored, what shape it has, how it is shown.

    ``channels`` is the trailing channel count of an image (0 means a plain
    (H, W) map); ``dim`` the length of a vector modality; ``num_classes`` the
    number of class ids of a label map (semseg) or None. A modality can also be
    declared in a file next to the data, without code: :mod:`pairless.data.declared`.
    """

    name: str
    kind: Kind
    dtype: str  # numpy dtype of the natural form ("str" for text)
    codec: Codec  # how the folder format stores one sample
    extensions: tuple[str, ...]  # accepted file extensions, first = the one we write
    channels: int = 0
    dim: int = 0
    num_classes: int | None = None
    viz: str = "rgb"  # rgb | depth | normal | labels | text | vector | gray
    description: str = ""
    # the image tokenizer's normalisation (pairless.tokenizers.normalize); None: chosen by name and dtype
    normalization: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def is_text(self) -> bool:
        return self.kind == "sequence"

    def natural_shape(self, size: int) -> tuple[int, ...]:
        """Shape of one sample's natural value at image size ``size`` (() for text)."""
        if self.kind == "image":
            return (size, size, self.channels) if self.channels else (size, size)
        if self.kind == "vector":
            return (self.dim,)
        return ()


def declared_note(modality: Modality, key: str) -> str:
    """`` (declared in FILE: modalities.NAME.KEY)`` for a modality declared in a file, else ``""``: appended
    to the message of a sample that contradicts the declaration. A key the file leaves out is named with the
    default it took (``channels`` not given: 0, a plain (S, S) map), so that the user knows what to add."""
    source = modality.extra.get("declared_in")
    if not source:
        return ""
    written = modality.extra.get("declaration")
    if isinstance(written, dict) and key not in written:
        default = getattr(modality, key, None)
        meaning = ": a plain (S, S) map, from a 1-channel file" if key == "channels" and not default else ""
        return f" (declared in {source}: modalities.{modality.name}.{key} not given, so {default!r}{meaning})"
    return f" (declared in {source}: modalities.{modality.name}.{key})"


# The semseg classes of the built-in world (index = class id).
SEMSEG_CLASSES: tuple[str, ...] = ("sky", "floor", "sphere", "cube", "cylinder", "cone")
EMBED_DIM = 64

_REGISTRY: dict[str, Modality] = {}


def register(modality: Modality, *, replace: bool = False) -> Modality:
    """Add a modality to the registry; refuses to silently overwrite one."""
    if modality.kind not in ("image", "sequence", "vector"):
        raise ValueError(f"modality {modality.name!r}: kind must be image|sequence|vector, got "
                         f"{modality.kind!r}")
    if modality.name in _REGISTRY and not replace:
        raise ValueError(f"modality {modality.name!r} is already registered (pass replace=True to redefine "
                         "it)")
    _REGISTRY[modality.name] = modality
    return modality


def unregister(name: str) -> None:
    """Remove a modality (tests use this to undo a temporary registration)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Modality:
    """Look a modality up by name; the error lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown modality {name!r}; known modalities: {known}") from None


def names() -> list[str]:
    """All registered modality names, built-in ones first in the study's order."""
    return list(_REGISTRY)


def check_names(requested, *, field_name: str = "modalities") -> list[str]:
    """Validate a list of modality names, raising a ValueError that names the field."""
    out = []
    for name in requested:
        if name not in _REGISTRY:
            raise ValueError(
                f"{field_name}: unknown modality {name!r}; allowed: {', '.join(sorted(_REGISTRY))}"
            )
        out.append(name)
    return out



def parse_chain(text: str) -> list[list[str]]:
    """``"rgb+normal:semseg:depth"`` -> [["rgb", "normal"], ["semseg"], ["depth"]]: the one parser of
    pairs (``a:b``), directions (``a+b:c``) and chains (``a:b:c``); every link after the first is one name."""
    links = [[name.strip() for name in link.split("+") if name.strip()] for link in text.split(":")]
    if len(links) < 2 or any(not link for link in links) or any(len(link) > 1 for link in links[1:]):
        raise ValueError(f"chain {text!r}: expected src[+src...]:dst[:dst...], e.g. rgb:normal:depth")
    return links


def parse_direction(text: str) -> tuple[list[str], str]:
    """``"rgb+normal:depth"`` -> (["rgb", "normal"], "depth")."""
    try:
        links = parse_chain(text)
    except ValueError:
        links = []
    if len(links) != 2:
        raise ValueError(f"direction {text!r}: expected src[+src...]:dst, e.g. rgb:depth or rgb+normal:depth")
    sources, destination = links[0], links[1][0]
    if destination in sources:
        raise ValueError(f"direction {text!r}: the destination {destination!r} is also a source")
    return sources, destination


def parse_pair(text: str) -> tuple[str, str]:
    """``"rgb:depth"`` -> ("rgb", "depth"): a pair of modalities (e.g. one never seen together)."""
    try:
        sources, destination = parse_direction(text)
    except ValueError:
        sources, destination = [], ""
    if len(sources) != 1:
        raise ValueError(f"pair {text!r}: expected A:B, e.g. rgb:depth")
    return sources[0], destination


class Pair(NamedTuple):
    """Two modalities (``first:second`` in text; a withheld pair, a pair never recorded together): a tuple,
    so ``a, b = pair`` and comparisons with plain tuples work; ``str(pair)`` is its text form."""

    first: str
    second: str

    @classmethod
    def parse(cls, value: str | Sequence[str]) -> Pair:
        """``"rgb:depth"`` or ``["rgb", "depth"]`` (results.json's form) -> Pair("rgb", "depth")."""
        if isinstance(value, str):
            return cls(*parse_pair(value))
        if len(value) != 2 or not all(isinstance(name, str) and name for name in value):
            raise ValueError(f"pair {value!r}: expected two modality names")
        return cls(*value)

    def __str__(self) -> str:
        return f"{self.first}:{self.second}"


class Direction(NamedTuple):
    """A translation ``sources -> destination`` (``a+b:c`` in text); ``str(direction)`` is its text form."""

    sources: tuple[str, ...]
    destination: str

    @classmethod
    def parse(cls, text: str) -> Direction:
        sources, destination = parse_direction(text)
        return cls(tuple(sources), destination)

    @property
    def source(self) -> str:
        """The sources as text: ``"rgb"``, or ``"rgb+normal"`` for several."""
        return "+".join(self.sources)

    def __str__(self) -> str:
        return f"{self.source}:{self.destination}"


def _direction_text(text: str) -> str:
    return str(Direction.parse(text))


def _pair_text(text: str) -> str:
    return str(Pair.parse(text))


# The text form of a direction or a pair as a pydantic field or dict key (results.json keys its evaluations
# by direction): validated by the parser above, kept as text so that JSON keys and lookups stay strings.
DirectionText = Annotated[str, AfterValidator(_direction_text)]
PairText = Annotated[str, AfterValidator(_pair_text)]


# The study's seven modalities, in its order.
WORLD_MODALITIES: tuple[str, ...] = ("rgb", "depth", "normal", "semseg", "det", "caption", "embed")

register(Modality("rgb", "image", "uint8", "png", (".png", ".jpg", ".jpeg"), channels=3, viz="rgb",
                  description="colour image, uint8 (H, W, 3)"))
register(Modality("depth", "image", "float32", "npy", (".npy",), viz="depth",
                  description="distance along the view axis, float32 (H, W), positive"))
register(Modality("normal", "image", "uint8", "png", (".png",), channels=3, viz="normal",
                  description="camera-space unit normals stored as uint8 (n + 1) / 2 * 255, (H, W, 3)"))
register(Modality("semseg", "image", "uint8", "png", (".png",), num_classes=len(SEMSEG_CLASSES), viz="labels",
                  description="class id per pixel, uint8 (H, W); classes: " + ", ".join(SEMSEG_CLASSES)))
register(Modality("det", "sequence", "str", "txt", (".txt",), viz="text",
                  description="boxes as text: per object 4 quantized coordinates then the class name"))
register(Modality("caption", "sequence", "str", "txt", (".txt",), viz="text",
                  description="a caption that is true of the scene"))
register(Modality("embed", "vector", "float32", "npy", (".npy",), dim=EMBED_DIM, viz="vector",
                  description=f"global semantic feature vector, float32 ({EMBED_DIM},)"))
