"""Training data read from streamed (webdataset) token shards, shard by shard.

The metadata (ids, presence, pseudo marks, sequence lengths) of every sample is read up front from the
shard indexes, so fragmentation assigns exactly the views it assigns on packed shards; the tokens are read
one shard at a time, when a batch first needs that shard, and the few shards in use are kept in memory.
A process reads only the samples of its own share of each global batch (``gather(..., own=...)``): the
rest of the batch gets placeholder tokens with the right sequence lengths, which leaves the masking of
its own samples exactly as with all tokens present (masking draws for the whole batch at once, row by
row). Requires ``data_order="shards"`` (:mod:`pairless.training.order`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

from pairless.batch import TokenSpec
from pairless.data.streamed_shards import StreamedShards
from pairless.training import fragment


@dataclass
class StreamedTrainingData:
    """The training split of streamed shards, restricted to the universe, with each sample's view."""

    source: StreamedShards
    specs: dict[str, TokenSpec]  # universe modalities, in shard order
    views: np.ndarray  # bool [N, M]
    ids: list[str]
    rows: np.ndarray  # int [N]: each training sample's row in the split
    lengths: dict[str, np.ndarray]  # sequence modality -> content length of each training sample
    paired_ids: dict[str, list[str]] = field(default_factory=dict)
    keep: int = 4  # shards held in memory

    def __post_init__(self):
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def modalities(self) -> list[str]:
        return list(self.specs)

    @property
    def shard_samples(self) -> int:
        return self.source.shard_samples

    def __len__(self) -> int:
        return len(self.ids)

    def _shard(self, index: int) -> dict[str, np.ndarray]:
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
        tokens = self.source.read(index, self.modalities)  # outside the lock: other shards may load meanwhile
        with self._lock:
            self._cache[index] = tokens
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        return tokens

    def sequence_lengths(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Non-pad tokens of each sequence modality of samples ``indices`` (from the shard indexes)."""
        return {name: self.lengths[name][np.asarray(indices, dtype=np.int64)] for name in self.lengths}

    def gather(self, indices: np.ndarray, own: tuple[int, int] | None = None
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Tokens ``{modality: LongTensor (B, L)}`` and views ``(B, M)`` of ``indices``; only the batch
        positions ``own`` (start, stop) are read, the others get placeholders of the right lengths."""
        indices = np.asarray(indices, dtype=np.int64)
        rows = self.rows[indices]
        start, stop = own if own is not None else (0, len(indices))
        tokens = {name: np.zeros((len(indices), spec.num_tokens), dtype=np.int64)
                  for name, spec in self.specs.items()}
        for name, spec in self.specs.items():  # placeholders: what masking reads of a sequence is its length
            if spec.kind == "sequence":
                filler = spec.eos_id if spec.eos_id not in (None, spec.pad_id) else (spec.pad_id or 0) + 1
                lengths = self.lengths[name][indices]
                tokens[name][:] = np.where(np.arange(spec.num_tokens)[None, :] < lengths[:, None], filler,
                                           spec.pad_id or 0)
        positions = np.arange(start, stop)
        shards = rows[positions] // self.shard_samples
        for shard in np.unique(shards):
            chosen = positions[shards == shard]
            loaded = self._shard(int(shard))
            for name in self.specs:
                tokens[name][chosen] = loaded[name][rows[chosen] - shard * self.shard_samples]
        return ({name: torch.from_numpy(value) for name, value in tokens.items()},
                torch.from_numpy(np.ascontiguousarray(self.views[indices])))


def load_streamed_training_data(root, split: str, config: fragment.FragmentConfig) -> StreamedTrainingData:
    """Open streamed shards, assign every sample its view (from the shard indexes), refuse a leak."""
    source = StreamedShards(root, split)
    ids, present, pseudo, lengths = source.metadata()
    all_modalities = list(source.specs)
    universe = fragment.resolve_universe(all_modalities, config)
    fragmented = fragment.fragment_samples(ids, present, all_modalities, config, pseudo)
    columns = [all_modalities.index(name) for name in universe]
    rows = fragmented.rows
    specs = {name: source.specs[name] for name in universe}
    return StreamedTrainingData(
        source=source, specs=specs, views=np.ascontiguousarray(fragmented.views[:, columns]),
        ids=[ids[row] for row in rows], rows=np.asarray(rows, dtype=np.int64),
        lengths={name: lengths[name][rows] for name, spec in specs.items() if spec.kind == "sequence"},
        paired_ids=fragmented.paired_ids)
