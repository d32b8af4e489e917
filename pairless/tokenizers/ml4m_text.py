"""ml-4m's text vocabulary as a pairless tokenizer: captions and boxes as ids of its 30k WordPiece.

ml-4m (github.com/apple/ml-4m) tokenizes every text modality at load time with one WordPiece file,
``tokenizer.json`` (the ``tokenizers`` library's format). Its ids are fixed by the file: ``[PAD]`` 0,
``[UNK]`` 1, ``[SOS]`` 2, ``[EOS]`` 3, the sentinels ``[S_0]`` .. ``[S_199]`` 4..203, then the coordinate
tokens ``v0=0`` .. ``v3=<bins - 1>`` and the words. A sequence target starts after ``[S_1]`` (the decoder's
BOS), and a text's ids are its wordpieces then ``[EOS]``, cut to the modality's length (ml-4m cuts without
an error: a text that is too long loses its ``[EOS]``).

Two forms, chosen per modality (``TOKDIR/<modality>/config.json``, type ``ml4m_text``):
- ``text`` (captions): the string as it is;
- ``det`` (boxes): ml-4m's detection JSON ``{"instances": [{"boxes": [xmin, ymin, xmax, ymax], "class_name",
  "score"}]}`` with coordinates as fractions of the image, written as ``v0=X v1=Y v2=X v3=Y class`` per box
  (boxes scoring under the threshold dropped, the others ordered by the distance of their top-left corner to
  the origin, coordinates in ``bins`` steps), or a string already in that form.

What it loses: ml-4m's normaliser lowercases (and strips accents where the file says so) and its decoder
joins pieces with single spaces, so ``decode(encode(text))`` is the lowercased text with normalised spacing,
never an exact round trip (pairless's own vocabulary, :mod:`.text`, keeps text as written).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from tokenizers import Tokenizer

from pairless.batch import TokenSpec
from pairless.config import Config
from pairless.utils.storage import atomic_write_json, atomic_write_text

FIXED_IDS = {"[PAD]": 0, "[UNK]": 1, "[SOS]": 2, "[EOS]": 3}
NUM_SENTINELS, FIRST_SENTINEL = 200, 4
PAD_ID, EOS_ID = 0, 3
BOS_TOKEN = "[S_1]"  # ml-4m's decoder reads a sentinel first: the start of the one span a target is
VOCABULARY_FOLDER = "ml4m_text"
DETECTION_THRESHOLD = 0.6  # ml-4m's default score threshold for pseudo-labelled boxes


class Ml4mTextConfig(Config):
    """One sequence modality read through ml-4m's vocabulary."""

    modality: str
    vocabulary: str = VOCABULARY_FOLDER  # folder under TOKDIR holding ml-4m's tokenizer.json
    num_tokens: int = Field(ge=2)
    form: Literal["text", "det"] = "text"
    detection_threshold: float = Field(default=DETECTION_THRESHOLD, ge=0.0, le=1.0)


def check_vocabulary(tokenizer: Tokenizer, where: str = "tokenizer.json") -> int:
    """Refuse a vocabulary whose special ids are not ml-4m's; return its number of coordinate bins (the
    ``v0=i`` tokens, 0 when it has none)."""
    vocabulary = tokenizer.get_vocab(with_added_tokens=True)
    wanted = dict(FIXED_IDS)
    wanted.update({f"[S_{index}]": FIRST_SENTINEL + index for index in range(NUM_SENTINELS)})
    wrong = [f"{token} is {vocabulary.get(token)} (ml-4m: {index})" for token, index in wanted.items()
             if vocabulary.get(token) != index]
    if wrong:
        raise ValueError(f"{where}: not ml-4m's text vocabulary: {'; '.join(wrong[:4])}"
                         f"{f' (+{len(wrong) - 4} more)' if len(wrong) > 4 else ''}")
    bins = 0
    while f"v0={bins}" in vocabulary:
        bins += 1
    for axis in range(1, 4):
        if bins and f"v{axis}={bins - 1}" not in vocabulary:
            raise ValueError(f"{where}: has v0=0..v0={bins - 1} but no v{axis}={bins - 1}: coordinate tokens "
                             "must come in four equal sets")
    return bins


def detection_text(record, bins: int, threshold: float = DETECTION_THRESHOLD,
                   crop: tuple[float, float, float, float] | None = None,
                   image_size: tuple[int, int] | None = None) -> str:
    """ml-4m's text form of one detection record (see the module docstring).

    ``crop``: (top, left, height, width) in pixels of the crop the tokens were made from, with ``image_size``
    (height, width) of the original image: boxes are moved into the crop and clipped to it, and boxes left
    with no area dropped. Without it the boxes are taken as fractions of the tokenized image.
    """
    if isinstance(record, str):
        return record
    if not isinstance(record, dict) or not isinstance(record.get("instances"), list):
        raise ValueError("a detection record is a JSON object with a list 'instances'")
    if bins < 2:
        raise ValueError("the vocabulary has no coordinate tokens (v0=0, v0=1, ...): it cannot write boxes")
    boxes = []
    for index, instance in enumerate(record["instances"]):
        try:
            corners = [float(value) for value in instance["boxes"]]
            name, score = str(instance["class_name"]), float(instance["score"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"instance {index}: needs 'boxes' [xmin, ymin, xmax, ymax], 'class_name' and "
                             f"'score' ({type(error).__name__}: {error})") from None
        if len(corners) != 4:
            raise ValueError(f"instance {index}: 'boxes' has {len(corners)} values, not 4")
        if score < threshold:
            continue
        if crop is not None and image_size is not None:
            top, left, height, width = crop
            rows, columns = image_size
            corners = [(corners[0] * columns - left) / width, (corners[1] * rows - top) / height,
                       (corners[2] * columns - left) / width, (corners[3] * rows - top) / height]
        corners = [min(max(value, 0.0), 1.0) for value in corners]
        if corners[2] <= corners[0] or corners[3] <= corners[1]:
            continue  # nothing of it is inside the image (or the crop)
        boxes.append((corners, name))
    boxes.sort(key=lambda box: box[0][0] ** 2 + box[0][1] ** 2)
    # round() is Python's (halves to even), as the coordinates were binned where these files come from
    return " ".join(" ".join([*(f"v{axis}={round(value * (bins - 1))}" for axis, value in enumerate(corners)),
                              name]) for corners, name in boxes)


class Ml4mTextTokenizer:
    """Texts (or detection records) <-> ``LongTensor [N, num_tokens]`` in ml-4m's vocabulary."""

    kind = "text"

    def __init__(self, config: Ml4mTextConfig, tokenizer: Tokenizer, where: str = "tokenizer.json"):
        self.config = config
        self.tokenizer = tokenizer
        self.bins = check_vocabulary(tokenizer, where)
        if config.form == "det" and self.bins < 2:
            raise ValueError(f"{where}: modality {config.modality!r} has the det form, but the vocabulary "
                             "has no coordinate tokens (v0=0, v0=1, ...)")

    @property
    def modality(self) -> str:
        return self.config.modality

    @property
    def spec(self) -> TokenSpec:
        return TokenSpec(name=self.modality, kind="sequence", num_tokens=self.config.num_tokens,
                         vocab_size=self.tokenizer.get_vocab_size(), pad_id=PAD_ID,
                         bos_id=FIRST_SENTINEL + 1, eos_id=EOS_ID)

    def truncating(self) -> Ml4mTextTokenizer:
        """Itself: ml-4m cuts long texts (see :meth:`encode`)."""
        return self

    def as_text(self, value) -> str:
        """The string ml-4m tokenizes for one value of this modality."""
        if self.config.form == "det":
            return detection_text(value, self.bins, self.config.detection_threshold)
        if not isinstance(value, str):
            raise TypeError(f"{self.modality}: expected a str, got {type(value).__name__}")
        return value

    def encode_counting(self, values) -> tuple[torch.Tensor, int]:
        """Ids ``[N, num_tokens]`` and how many texts were cut (their ``[EOS]`` lost with them)."""
        if isinstance(values, (str, dict)):
            raise TypeError(f"{self.modality}: expected a list of values, got one {type(values).__name__}")
        texts = [self.as_text(value) for value in values]
        length = self.config.num_tokens
        out = torch.full((len(texts), length), PAD_ID, dtype=torch.long)
        cut = 0
        for row, encoding in enumerate(self.tokenizer.encode_batch(texts)):
            ids = [*encoding.ids, EOS_ID]
            cut += len(ids) > length
            ids = ids[:length]
            out[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out, cut

    def encode(self, values) -> torch.Tensor:
        """Values -> ids: wordpieces, ``[EOS]``, ``[PAD]`` to ``num_tokens``; longer ones cut (as ml-4m)."""
        return self.encode_counting(values)[0]

    def decode(self, ids) -> list[str]:
        """Ids ``[N, L]`` -> texts (lowercased, as encoded); each row stops at its first ``[EOS]``, the
        special tokens (padding, sentinels) are dropped, coordinate tokens are kept as words."""
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)  # read only: never written
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise ValueError(f"{self.modality}: expected integer token ids of shape [N, L], "
                             f"got {list(ids.shape)} {ids.dtype}")
        rows = []
        for row in ids.tolist():
            row = row[:row.index(EOS_ID)] if EOS_ID in row else row
            rows.append([token for token in row if token >= FIRST_SENTINEL + NUM_SENTINELS])
        return self.tokenizer.decode_batch(rows, skip_special_tokens=False)

    def save(self, folder: str | Path) -> None:
        """Write ``folder/config.json`` (TOKDIR/<modality>; the vocabulary by :func:`save_vocabulary`)."""
        atomic_write_json(Path(folder) / "config.json",
                          {"type": "ml4m_text", **self.config.model_dump(mode="json")})


def read_vocabulary(path: str | Path) -> Tokenizer:
    """ml-4m's ``tokenizer.json`` (checked: its special ids must be ml-4m's)."""
    path = Path(path)
    try:
        tokenizer = Tokenizer.from_str(path.read_text(encoding="utf-8"))
    except Exception as error:  # noqa: BLE001 - the library raises a plain Exception for a bad file
        raise ValueError(f"{path}: cannot read a tokenizers-library tokenizer.json ({error})") from None
    check_vocabulary(tokenizer, str(path))
    return tokenizer


def save_vocabulary(tokenizer: Tokenizer, folder: str | Path, info: dict) -> None:
    """``folder/tokenizer.json`` (the file as the library writes it) and ``folder/config.json``."""
    folder = Path(folder)
    atomic_write_text(folder / "tokenizer.json", tokenizer.to_str(pretty=True))
    atomic_write_json(folder / "config.json", {"type": "ml4m_text_vocabulary",
                                               "vocab_size": tokenizer.get_vocab_size(), **info})


def load_ml4m_text_tokenizer(tokenizer_root: str | Path, config: Ml4mTextConfig) -> Ml4mTextTokenizer:
    path = Path(tokenizer_root) / config.vocabulary / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{config.modality}: ml-4m text vocabulary {path} is missing")
    return Ml4mTextTokenizer(config, read_vocabulary(path), str(path))

