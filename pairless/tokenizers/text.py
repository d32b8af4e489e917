"""Text tokenizer: one WordPiece vocabulary shared by every sequence modality (caption, det).

Special tokens come first, so their ids are fixed: ``[PAD]`` 0, ``[UNK]`` 1,
``[BOS]`` 2, ``[EOS]`` 3, then the span-masking sentinels ``[S_0]`` ..
``[S_15]`` (4..19).

Exact round trip: there is no normaliser (text is kept as written), the
pre-tokenizer marks word starts with ``▁`` (Metaspace) and isolates
punctuation, and the decoder strips the ``##`` continuation prefix, fuses the
pieces and turns ``▁`` back into spaces. So ``decode(encode(t)) == t`` for
every text made of vocabulary characters, single spaces and punctuation.

Each modality has its own padded length ``num_tokens``: its longest training
text in wordpieces + 1 (``[EOS]``), rounded up to a multiple of 4. Longer
texts raise an error unless the tokenizer was built with ``truncate=True``
(``text.length_margin`` adds room for val/test texts longer than any training text).
Layout: ``TOKDIR/text/tokenizer.json`` (the shared vocabulary) and
``TOKDIR/<modality>/config.json`` (``num_tokens``, ``truncate``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from pairless.batch import TokenSpec
from pairless.config import Config
from pairless.utils.storage import atomic_write_json, atomic_write_text

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", *(f"[S_{i}]" for i in range(16)))
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
VOCABULARY_FOLDER = "text"
WORD_START = "▁"


class TextConfig(Config):
    """One sequence modality's view of the shared vocabulary."""

    modality: str
    vocabulary: str = VOCABULARY_FOLDER  # folder under TOKDIR holding tokenizer.json
    num_tokens: int = Field(ge=2)
    truncate: bool = False


def build_empty_tokenizer(vocabulary: dict[str, int] | None = None) -> Tokenizer:
    """A WordPiece tokenizer configured for an exact round trip (see the module docstring)."""
    model = models.WordPiece(vocab=vocabulary, unk_token="[UNK]",
                             max_input_chars_per_word=100) if vocabulary \
        else models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=WORD_START, prepend_scheme="always"),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])
    tokenizer.decoder = decoders.Sequence([
        decoders.Replace("##", ""), decoders.Fuse(), decoders.Replace(WORD_START, " "), decoders.Strip(" ", 1,
            0),
    ])
    return tokenizer


def train_vocabulary(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """Build the shared WordPiece vocabulary from all training texts of every sequence modality.

    Deterministic by construction (the ``tokenizers`` library's WordPiece trainer picked different
    subwords in different processes, so two identical runs gave different token ids): the special
    tokens, then every character seen (as a word start and as a ``##`` continuation, so any text of
    known characters still round-trips), then whole words by falling count, ties broken alphabetically,
    up to ``vocab_size``.
    """
    splitter = build_empty_tokenizer().pre_tokenizer
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(piece for piece, _ in splitter.pre_tokenize_str(text))
    characters = sorted({char for word in counts for char in word})
    vocabulary = list(SPECIAL_TOKENS) + characters + [f"##{char}" for char in characters]
    known = set(vocabulary)
    for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(vocabulary) >= vocab_size:
            break
        if word not in known:
            vocabulary.append(word)
            known.add(word)
    return build_empty_tokenizer({token: index for index, token in enumerate(vocabulary)})


def padded_length(tokenizer: Tokenizer, texts: Sequence[str], margin: int = 0) -> int:
    """Longest text in wordpieces + 1 for ``[EOS]`` (+ ``margin``), rounded up to a multiple of 4."""
    longest = max((len(encoding.ids) for encoding in tokenizer.encode_batch(list(texts))), default=0)
    return int(-(-(longest + 1 + margin) // 4) * 4)


class TextTokenizer:
    """list[str] <-> ``LongTensor [N, num_tokens]`` (wordpieces, ``[EOS]``, ``[PAD]``...)."""

    kind = "text"

    def __init__(self, config: TextConfig, tokenizer: Tokenizer):
        self.config = config
        self.tokenizer = tokenizer

    @property
    def modality(self) -> str:
        return self.config.modality

    @property
    def spec(self) -> TokenSpec:
        return TokenSpec(name=self.modality, kind="sequence", num_tokens=self.config.num_tokens,
                         vocab_size=self.tokenizer.get_vocab_size(), pad_id=PAD_ID, bos_id=BOS_ID,
                         eos_id=EOS_ID)

    def check_texts(self, texts) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple, np.ndarray)):
            raise TypeError(f"{self.modality}: expected a list of str, got {type(texts).__name__}")
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{self.modality}: expected a list of str, item {index} is "
                                f"{type(text).__name__}")
        return texts

    def truncating(self) -> TextTokenizer:
        """The same tokenizer, but cutting texts longer than ``num_tokens`` instead of raising."""
        return TextTokenizer(self.config.model_copy(update={"truncate": True}), self.tokenizer)

    def encode(self, texts) -> torch.Tensor:
        """Texts -> ids ``[N, num_tokens]``: wordpieces, ``[EOS]``, then ``[PAD]`` to the fixed length."""
        texts = self.check_texts(texts)
        length = self.config.num_tokens
        out = torch.full((len(texts), length), PAD_ID, dtype=torch.long)
        for row, encoding in enumerate(self.tokenizer.encode_batch(texts)):
            ids = encoding.ids
            if len(ids) + 1 > length:
                if not self.config.truncate:
                    raise ValueError(f"{self.modality}: text {row} has {len(ids)} wordpieces + [EOS] = "
                                     f"{len(ids) + 1} "
                                     f"tokens, more than num_tokens={length} (retrain the tokenizers on data "
                                     f"that includes such texts, or set truncate=True): {texts[row][:80]!r}")
                ids = ids[:length - 1]
            out[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            out[row, len(ids)] = EOS_ID
        return out

    def decode(self, ids) -> list[str]:
        """Ids ``[N, L]`` -> texts; each row stops at its first ``[EOS]``, special tokens are dropped."""
        ids = torch.as_tensor(ids)
        if ids.ndim != 2 or ids.dtype.is_floating_point:
            raise ValueError(f"{self.modality}: expected integer token ids of shape [N, L], "
                             f"got {list(ids.shape)} {ids.dtype}")
        rows = []
        for row in ids.tolist():
            if EOS_ID in row:
                row = row[:row.index(EOS_ID)]
            rows.append(row)
        return self.tokenizer.decode_batch(rows, skip_special_tokens=True)

    def save(self, folder: str | Path) -> None:
        """Write ``folder/config.json`` (TOKDIR/<modality>; the vocabulary is saved by
        :func:`save_vocabulary`)."""
        atomic_write_json(Path(folder) / "config.json",
                          {"type": self.kind, **self.config.model_dump(mode="json")})


def save_vocabulary(tokenizer: Tokenizer, folder: str | Path, info: dict) -> None:
    folder = Path(folder)
    atomic_write_text(folder / "tokenizer.json", tokenizer.to_str(pretty=True))
    atomic_write_json(folder / "config.json", {"type": "text_vocabulary",
                                               "vocab_size": tokenizer.get_vocab_size(),
                                               "special_tokens": list(SPECIAL_TOKENS), **info})


def load_text_tokenizer(tokenizer_root: str | Path, config: TextConfig) -> TextTokenizer:
    path = Path(tokenizer_root) / config.vocabulary / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{config.modality}: shared text vocabulary {path} is missing")
    return TextTokenizer(config, Tokenizer.from_str(path.read_text(encoding="utf-8")))
