"""The training data path: token shards -> fragmented views -> the sample order of every step.

Everything random here is a pure function of ``(seed, stream, index)``: the
sample order of epoch ``e`` comes from a generator seeded by ``(seed, e)``,
the masking of sample ``i`` at step ``s`` from a key of ``(seed, s, i)``
(the ``sample`` stream; the older ``batch`` stream seeds one generator by
``(seed, s)`` for the whole batch). Resuming at step ``s`` therefore needs
no saved data-loader state, and every process of a multi-process run agrees
on the global batch while masking only its own slice of it, so results do
not depend on the number of processes beyond floating-point summation order.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from pairless.batch import MaskedBatch, TokenSpec
from pairless.model.transformer import with_target_rows
from pairless.training import fragment, sample_random

# Independent random streams derived from the one training seed.
EPOCH_ORDER_STREAM = 1
MASKING_STREAM = 2
DROPOUT_STREAM = 3
INIT_STREAM = 4


def derive_seed(seed: int, stream: int, *indices: int) -> int:
    """A 63-bit seed for ``(seed, stream, *indices)``, statistically independent across inputs."""
    state = np.random.SeedSequence([seed, stream, *indices]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF


def seeded_generator(seed: int, stream: int, *indices: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, stream, *indices))


@dataclass
class TrainingData:
    """The training split restricted to the universe, with each sample's view."""

    specs: dict[str, TokenSpec]  # universe modalities, in shard order
    tokens: dict[str, np.ndarray]  # modality -> int [N, L]
    views: np.ndarray  # bool [N, M]: which universe modality each sample exposes
    ids: list[str]
    # "a:b" -> ids of the samples allowed to keep both of a withheld pair (fragment.allow_pairs)
    paired_ids: dict[str, list[str]] = field(default_factory=dict)
    rows: np.ndarray | None = None  # int [N]: each sample's row in the split (None: 0..N-1)

    @property
    def modalities(self) -> list[str]:
        return list(self.specs)

    def __len__(self) -> int:
        return len(self.ids)

    def sequence_lengths(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Non-pad tokens of each sequence modality of samples ``indices``."""
        return sequence_lengths(self, indices)

    def gather(self, indices: np.ndarray, own: tuple[int, int] | None = None
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Token tensors ``{modality: LongTensor (B, L)}`` and views ``BoolTensor (B, M)`` of ``indices``
        (``own``: the positions a process trains on; packed shards are read whole, so it is not needed)."""
        tokens = {name: torch.from_numpy(np.asarray(self.tokens[name][indices], dtype=np.int64))
                  for name in self.specs}
        return tokens, torch.from_numpy(np.ascontiguousarray(self.views[indices]))


def sequence_lengths(data, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Non-pad tokens of each sequence modality of samples ``indices`` (what masking's budgets read)."""
    return {name: (np.asarray(data.tokens[name][indices]) != spec.pad_id).sum(1)
            for name, spec in data.specs.items() if spec.kind == "sequence"}


def load_training_data(shards: Path, split: str, config: fragment.FragmentConfig) -> TrainingData:
    """Open the token shards, assign every sample its view, and refuse data that breaks a withheld pair."""
    from pairless.data.shards import open_shards

    if not Path(shards).is_dir():
        raise FileNotFoundError(f"shards: {shards} is not a folder (run `pairless tokenize` first)")
    data = open_shards(shards, split)
    all_modalities = list(data.specs)
    universe = fragment.resolve_universe(all_modalities, config)
    present, pseudo = fragment.shard_presence(data)
    # Views, the leakage check (a withheld pair co-occurs in its allowed samples only, real tokens never
    # elsewhere; model-generated ones may) and only_paired.
    fragmented = fragment.fragment_samples(list(data.ids), present, all_modalities, config, pseudo)
    columns = [all_modalities.index(name) for name in universe]
    views = np.ascontiguousarray(fragmented.views[:, columns])
    rows = fragmented.rows
    every = len(rows) == len(data.ids)  # keep the shards' arrays (memory-mapped) when no sample is dropped
    return TrainingData(
        specs={name: data.specs[name] for name in universe},
        tokens={name: data.tokens[name] if every else np.asarray(data.tokens[name][rows])
                for name in universe},
        views=views,
        ids=[data.ids[row] for row in rows],
        paired_ids=fragmented.paired_ids,
        rows=np.asarray(rows, dtype=np.int64),
    )


class SampleOrder:
    """Which samples form the global batch of each step: a fresh seeded permutation per epoch.

    The last incomplete batch of an epoch is dropped, so every step has
    exactly ``batch_size`` samples.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int):
        if batch_size > num_samples:
            raise ValueError(f"batch_size: {batch_size} is larger than the {num_samples} training samples")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = num_samples // batch_size
        self._cached_epoch: int | None = None
        self._permutation = np.empty(0, dtype=np.int64)

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index inside the epoch) of a step."""
        return divmod(step, self.batches_per_epoch)

    def indices(self, step: int) -> np.ndarray:
        """Sample indices (into the split) of the global batch of ``step``, shape (batch_size,)."""
        epoch, offset = self.position(step)
        if epoch != self._cached_epoch:
            generator = seeded_generator(self.seed, EPOCH_ORDER_STREAM, epoch)
            self._permutation = torch.randperm(self.num_samples, generator=generator).numpy()
            self._cached_epoch = epoch
        return self._permutation[offset * self.batch_size:(offset + 1) * self.batch_size]


@dataclass
class PreparedBatch:
    """What one step trains on, as this process prepared it."""

    indices: np.ndarray  # int [batch_size]: the global batch's sample indices
    batch: MaskedBatch  # this process's rows of it (``own``), in pinned memory when it feeds a GPU
    offset: int  # position of ``batch``'s first row in the global batch
    # int64 [M]: valid input + target tokens per modality, of the whole global batch, or (with
    # ``modality_tokens_global`` False) of this process's rows only: the loop sums them over processes when
    # it syncs
    modality_tokens: np.ndarray
    # ``batch`` cut into the micro-batches of ``BatchSource.micro``, each with its target rows found on the
    # host (pairless.model.transformer.with_target_rows)
    micro_batches: list[MaskedBatch]
    num_valid_tokens: int  # valid input + target tokens of the whole global batch (the budget)
    modality_tokens_global: bool = True


class BatchSource:
    """The masked batch of each step: this process's rows of the global batch, optionally prepared ahead by
    background threads.

    ``stream="sample"``: each sample is masked from a key of ``(seed, step, sample index)``
    (:mod:`pairless.training.sample_random`), so the process masks only its own rows ``own`` and computes the
    global batch's token counts (the budget) without masking the rest. ``stream="batch"``: the stream of runs
    trained before 2026-12-07, one generator per step for the whole batch, which every process masks whole.
    """

    def __init__(self, data: TrainingData, order: SampleOrder, masker, seed: int, num_workers: int,
                 own: tuple[int, int] | None = None, stream: str = "sample", pin_memory: bool = False,
                 micro: list[tuple[int, int]] | None = None, global_modality_tokens: bool = True):
        # own: the positions of the global batch this process trains on (streamed shards read only those);
        # micro: its micro-batches, positions relative to own[0] (None: one micro-batch)
        self.data, self.order, self.masker, self.seed, self.own = data, order, masker, seed, own
        self.stream, self.pin_memory, self.micro = stream, pin_memory, micro
        # False: the per-modality counts of this process's rows only (the totals stay global; the sample
        # stream then splits no other process's budgets, the costly part of counting); True: of every row
        self.global_modality_tokens = global_modality_tokens
        if stream not in ("sample", "batch"):
            raise ValueError(f"masking_stream: {stream!r} is not one of sample, batch")
        self.pool = None
        if num_workers > 0:
            self.pool = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="pairless-batches")
        self.ahead = num_workers
        self.pending: dict = {}

    def _make(self, step: int, indices: np.ndarray) -> PreparedBatch:
        start, stop = self.own if self.own is not None else (0, len(indices))
        whole_batch = (start, stop) == (0, len(indices))
        if self.stream == "batch":
            tokens, views = self.data.gather(indices, self.own)
            whole = self.masker(tokens, views, seeded_generator(self.seed, MASKING_STREAM, step))
            counts, complete = tokens_per_modality(whole), True
            total = int(counts.sum())
            batch = whole if whole_batch else slice_batch(whole, start, stop)
        else:
            keys = sample_random.sample_keys(derive_seed(self.seed, MASKING_STREAM, step), indices)
            # every row's token count (the budget) from the texts' lengths alone; this process's rows whole
            views = torch.from_numpy(np.ascontiguousarray(self.data.views[indices]))
            lengths = self.data.sequence_lengths(indices)
            complete = self.global_modality_tokens or whole_batch
            if complete:  # every row's split across modalities
                all_inputs, all_targets = self.masker.sample_counts_from_lengths(lengths, views, keys)
                counts = (all_inputs + all_targets).sum(0).numpy().astype(np.int64)
                inputs, targets = all_inputs[start:stop], all_targets[start:stop]
            else:  # this process's rows only
                own = {name: value[start:stop] for name, value in lengths.items()}
                inputs, targets = self.masker.sample_counts_from_lengths(own, views[start:stop],
                                                                         keys[start:stop])
                counts = (inputs + targets).sum(0).numpy().astype(np.int64)
            total = int(self.masker.sample_totals_from_lengths(lengths, views, keys).sum())
            tokens, own_views = self.data.gather(indices[start:stop])
            batch = self.masker.mask_samples(tokens, own_views, keys[start:stop], (inputs, targets))
        micro = [with_target_rows(slice_batch(batch, first, last) if (first, last) != (0, stop - start)
                                  else batch) for first, last in (self.micro or [(0, stop - start)])]
        if self.pin_memory:
            micro = [part.pin_memory() for part in micro]
        return PreparedBatch(indices, batch, start, counts, micro, total, complete)

    def get(self, step: int) -> PreparedBatch:
        """This process's share of the batch of ``step``."""
        indices = self.order.indices(step)
        if self.pool is None:
            return self._make(step, indices)
        for upcoming in range(step, step + self.ahead + 1):
            if upcoming not in self.pending:
                self.pending[upcoming] = self.pool.submit(self._make, upcoming,
                                                          self.order.indices(upcoming).copy())
        return self.pending.pop(step).result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def slice_batch(batch: MaskedBatch, start: int, stop: int) -> MaskedBatch:
    """Samples ``start:stop`` of a masked batch (a process's share, or one micro-batch)."""
    parts = {f.name: getattr(batch, f.name) for f in fields(batch) if f.name not in ROW_FIELDS}
    return MaskedBatch(**{name: value[start:stop] if isinstance(value, torch.Tensor) else value
                          for name, value in parts.items()})


ROW_FIELDS = ("target_rows", "target_counts")  # describe a whole batch: not sliced (with_target_rows)


def tokens_per_modality(batch: MaskedBatch) -> np.ndarray:
    """Valid input + target tokens of each modality in ``batch``, int64 [M]."""
    count = len(batch.modalities)
    inputs = torch.bincount(batch.enc_modality[batch.enc_valid], minlength=count)
    targets = torch.bincount(batch.dec_modality[batch.dec_valid], minlength=count)
    return (inputs + targets).numpy().astype(np.int64)
