"""The shard order of training samples (``TrainConfig.data_order="shards"``): what streamed shards can be
read in, and what packed shards reproduce exactly.

Shards are consecutive blocks of ``shard_samples`` rows of the split (the blocks streamed shards are
written in). Epoch ``e``: the shards in a seeded permutation, dealt round-robin to ``groups`` streams
(stream g gets the permuted shards g, g + G, ...); each shard's training samples in a seeded permutation
of their own; a stream is its shards' samples one after another. Global batch b of the epoch is, for each
stream g in turn, its samples ``[b B/G, (b+1) B/G)``. The epoch ends when a stream runs out (its
leftover samples wait for the next epoch's deal). Everything is a function of ``(seed, epoch)``, so a
resumed run needs no loader state, and with ``groups`` equal to the number of processes each process's
share of a batch comes from its own stream: it reads its own shards only.
"""

from __future__ import annotations

import numpy as np
import torch

from pairless.training.data import EPOCH_ORDER_STREAM, seeded_generator


def shard_members(rows: np.ndarray, shard_samples: int) -> list[np.ndarray]:
    """For each shard of the split, the training-sample indices whose split row lies in it (in row order).

    ``rows``: the split row of each training sample (increasing).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return []
    shard = rows // shard_samples
    count = int(shard.max()) + 1
    return [np.flatnonzero(shard == index) for index in range(count)]


class ShardOrder:
    """The training-sample indices of each step's global batch, drawn shard by shard (module doc)."""

    def __init__(self, members: list[np.ndarray], batch_size: int, seed: int, groups: int = 1):
        if groups < 1 or batch_size % groups:
            raise ValueError(f"stream_groups: {groups} must divide batch_size {batch_size}")
        self.members = [np.asarray(m, dtype=np.int64) for m in members]
        self.batch_size, self.seed, self.groups = batch_size, seed, groups
        self.share = batch_size // groups  # samples per stream and batch
        if sum(len(m) for m in self.members) < batch_size:
            raise ValueError(f"batch_size: {batch_size} is larger than the "
                             f"{sum(len(m) for m in self.members)} training samples")
        self._epochs: dict[int, list[np.ndarray]] = {}  # epoch -> each stream's sample order
        self._starts = [0]  # first step of each epoch computed so far

    def streams(self, epoch: int) -> list[np.ndarray]:
        """Each stream's training-sample order in ``epoch``."""
        if epoch not in self._epochs:
            generator = seeded_generator(self.seed, EPOCH_ORDER_STREAM, epoch)
            dealt = torch.randperm(len(self.members), generator=generator).tolist()
            streams = []
            for group in range(self.groups):
                parts = []
                for shard in dealt[group::self.groups]:
                    members = self.members[shard]
                    within = seeded_generator(self.seed, EPOCH_ORDER_STREAM, epoch, shard + 1)
                    parts.append(members[torch.randperm(len(members), generator=within).numpy()])
                streams.append(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))
            if min(len(stream) for stream in streams) < self.share:
                raise ValueError(f"stream_groups: {self.groups} streams of {len(self.members)} shards leave "
                                 f"a stream with fewer than {self.share} samples in epoch {epoch}; use fewer "
                                 "groups or smaller shards")
            self._epochs = {key: value for key, value in self._epochs.items() if key >= epoch - 1}
            self._epochs[epoch] = streams
        return self._epochs[epoch]

    def batches_in(self, epoch: int) -> int:
        return min(len(stream) for stream in self.streams(epoch)) // self.share

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index inside the epoch) of a step (epochs differ in length)."""
        epoch = 0
        while True:
            if epoch + 1 >= len(self._starts):
                self._starts.append(self._starts[-1] + self.batches_in(len(self._starts) - 1))
                continue
            if step < self._starts[epoch + 1]:
                return epoch, step - self._starts[epoch]
            epoch += 1

    @property
    def batches_per_epoch(self) -> int:
        """Batches of epoch 0 (a checkpoint records it to refuse other data or batch size on resume)."""
        return self.batches_in(0)

    def indices(self, step: int) -> np.ndarray:
        """Training-sample indices of the global batch of ``step``, shape (batch_size,), stream by stream."""
        epoch, offset = self.position(step)
        start = offset * self.share
        return np.concatenate([stream[start:start + self.share] for stream in self.streams(epoch)])
