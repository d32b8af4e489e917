"""Streamed (webdataset) token shards in training: the shard order, the same batches as packed shards of
the same shard size, a process reading only its own share, fragmentation and the audit on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pairless.config import ConfigError, validate
from pairless.data.streamed_shards import StreamedShards, write_streamed
from pairless.training.config import TrainConfig
from pairless.training.data import BatchSource, seeded_generator
from pairless.training.fragment import audit
from pairless.training.masking import Masker
from pairless.training.order import ShardOrder, shard_members
from pairless.training.train import train, training_data
from tests.train_helpers import make_shards, tiny_config_data

pytestmark = pytest.mark.usefixtures("one_thread")
SHARD = 10


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("streamed")
    packed = make_shards(root / "packed", count=96)
    return packed, write_streamed(packed, root / "wds", shard_samples=SHARD)


def _config(shards, out, **changes) -> TrainConfig:
    return validate(TrainConfig, tiny_config_data(shards, out, **{"data_order": "shards",
                                                                   "shard_samples": SHARD, **changes}))


def test_an_epoch_visits_each_sample_once_stream_by_stream():
    members = shard_members(np.arange(95), 10)  # 10 shards, the last one of 5
    order = ShardOrder(members, batch_size=16, seed=3, groups=2)
    epoch = np.concatenate([order.indices(step) for step in range(order.batches_in(0))])
    assert len(set(epoch.tolist())) == len(epoch)  # no sample twice
    for step in range(order.batches_in(0)):  # each half of a batch comes from its own stream's shards
        first, second = order.indices(step)[:8] // 10, order.indices(step)[8:] // 10
        assert not set(first.tolist()) & set(second.tolist())
    again = ShardOrder(members, batch_size=16, seed=3, groups=2)
    steps = range(order.batches_in(0) - 1, order.batches_in(0) + order.batches_in(1) + 2)  # across epochs
    assert all(np.array_equal(order.indices(s), again.indices(s)) for s in reversed(steps))  # any order
    assert order.position(order.batches_in(0)) == (1, 0)
    with pytest.raises(ValueError, match="stream_groups"):
        ShardOrder(members, batch_size=16, seed=3, groups=3)


def test_streamed_and_packed_shards_give_the_same_batches(both, tmp_path):
    packed, streamed = both
    withheld = dict(withheld=[["rgb", "depth"]])
    batches = []
    for shards in (packed, streamed):
        config = _config(shards, tmp_path / "x", fragment=withheld, stream_groups=2)
        data, order = training_data(config)
        masker = Masker(data.specs, config.masking, data.modalities)
        source = BatchSource(data, order, masker, config.seed, num_workers=0)
        batches.append([source.get(step) for step in range(14)])  # past the end of the first epoch
    for prepared_a, prepared_b in zip(*batches, strict=True):
        assert np.array_equal(prepared_a.indices, prepared_b.indices)
        assert np.array_equal(prepared_a.modality_tokens, prepared_b.modality_tokens)
        for name in ("enc_tokens", "enc_modality", "enc_positions", "dec_tokens", "dec_valid"):
            assert torch.equal(getattr(prepared_a.batch, name), getattr(prepared_b.batch, name)), name


def test_a_process_masking_its_share_of_streamed_shards_gets_the_rows_and_counts_of_the_whole(both, tmp_path):
    _, streamed = both
    config = _config(streamed, tmp_path / "x", stream_groups=2)
    data, order = training_data(config)
    masker = Masker(data.specs, config.masking, data.modalities)
    whole = BatchSource(data, order, masker, config.seed, num_workers=0).get(3)
    data._cache.clear()
    share = BatchSource(data, order, masker, config.seed, num_workers=0, own=(8, 16)).get(3)
    assert share.offset == 8 and share.batch.batch_size == 8
    assert np.array_equal(share.modality_tokens, whole.modality_tokens)  # the budget counts the whole batch
    for name in ("enc_tokens", "enc_modality", "enc_positions", "dec_tokens", "dec_input_tokens",
                 "dec_valid"):
        assert torch.equal(getattr(whole.batch, name)[8:], getattr(share.batch, name)), name


def test_a_process_reads_only_its_share_and_masks_it_as_with_everything(both, tmp_path):
    _, streamed = both
    config = _config(streamed, tmp_path / "x", stream_groups=2)
    data, order = training_data(config)
    masker = Masker(data.specs, config.masking, data.modalities)
    indices = order.indices(3)
    whole = masker(*data.gather(indices), seeded_generator(0, 2, 3))
    data._cache.clear()
    read = []
    original = data.source.read
    data.source.read = lambda shard, names: read.append(shard) or original(shard, names)
    part = masker(*data.gather(indices, own=(0, 8)), seeded_generator(0, 2, 3))
    assert set(read) == set((data.rows[indices[:8]] // SHARD).tolist())  # the first stream's shards only
    for name in ("enc_tokens", "enc_modality", "enc_positions", "dec_tokens", "dec_input_tokens",
                 "dec_valid"):
        assert torch.equal(getattr(whole, name)[:8], getattr(part, name)[:8]), name


def test_training_on_streamed_shards_is_training_on_packed_ones(both, tmp_path):
    packed, streamed = both
    runs = [train(_config(shards, tmp_path / name)) for name, shards in (("p", packed), ("s", streamed))]
    losses = [[json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]
              for run in runs]
    assert losses[0] == losses[1] and len(losses[0]) > 5
    with pytest.raises(ConfigError, match="data_order"):
        training_data(validate(TrainConfig, tiny_config_data(streamed, tmp_path / "g")))
    with pytest.raises(ConfigError, match="shard_samples"):
        training_data(_config(streamed, tmp_path / "y", shard_samples=SHARD + 1))


def test_the_audit_and_the_views_are_the_same_on_streamed_shards(both):
    packed, streamed = both
    from pairless.training.fragment import FragmentConfig

    config = FragmentConfig(withheld=[("rgb", "depth")], allow_pairs={"rgb:depth": 5})
    assert audit(packed, "train", config) == audit(streamed, "train", config)
    assert StreamedShards(streamed, "train").metadata()[0][:3] == ["sample0000", "sample0001", "sample0002"]
