"""Token shards: write/read round trip, memory mapping, and validation errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest

from pairless.batch import TokenSpec
from pairless.data import DataError
from pairless.data.shards import ShardSplit, open_shards, write_shards

SPECS = {
    "rgb": TokenSpec("rgb", "image", num_tokens=4, vocab_size=64, grid=(2, 2)),
    "caption": TokenSpec("caption", "sequence", num_tokens=6, vocab_size=100, pad_id=0, bos_id=1, eos_id=2),
}


def make_shard_split(count: int = 5, seed: int = 0) -> ShardSplit:
    rng = np.random.default_rng(seed)
    tokens = {name: rng.integers(0, spec.vocab_size, (count, spec.num_tokens))
              for name, spec in SPECS.items()}
    present = {name: np.ones(count, dtype=bool) for name in SPECS}
    present["caption"][1] = False
    return ShardSplit(ids=[f"id{index}" for index in range(count)], tokens=tokens, present=present,
                      scenes=[{"index": index} for index in range(count)])


def test_round_trip(tmp_path):
    train, val = make_shard_split(5, 0), make_shard_split(3, 1)
    root = write_shards(tmp_path / "shards", {"train": train, "val": val}, SPECS, {"tokenizer_hash": "abc"})
    shards = open_shards(root, "train")
    assert shards.specs == SPECS and list(shards.specs) == ["rgb", "caption"]
    assert shards.ids == train.ids and len(shards) == 5
    assert shards.scenes == train.scenes and shards.info == {"tokenizer_hash": "abc"}
    assert isinstance(shards.tokens["rgb"], np.memmap) and shards.tokens["rgb"].dtype == np.int32
    np.testing.assert_array_equal(shards.tokens["rgb"], train.tokens["rgb"])
    expected = train.tokens["caption"].copy()
    expected[1] = 0  # absent samples are stored as zeros
    np.testing.assert_array_equal(shards.tokens["caption"], expected)
    np.testing.assert_array_equal(shards.present["caption"], train.present["caption"])
    assert len(open_shards(root, "val")) == 3
    with pytest.raises(DataError, match="no split 'test'; splits: train, val"):
        open_shards(root, "test")


def test_write_refuses_bad_tokens(tmp_path):
    split = make_shard_split()
    split.tokens["rgb"][3, 1] = 64
    with pytest.raises(DataError, match=r"modality 'rgb'.*row 3: token ids in \[.*, 64\] outside \[0, 64\)"):
        write_shards(tmp_path / "s", {"train": split}, SPECS, {})
    split = make_shard_split()
    split.tokens["caption"][1, 0] = -5  # absent sample: ignored, and stored as 0
    split.tokens["rgb"] = split.tokens["rgb"][:, :3]
    with pytest.raises(DataError, match=r"'rgb'.*shape \[5, 3\], expected \[5, 4\]"):
        write_shards(tmp_path / "s", {"train": split}, SPECS, {})
    split = make_shard_split()
    del split.tokens["caption"], split.present["caption"]
    with pytest.raises(DataError, match="do not match the specs"):
        write_shards(tmp_path / "s", {"train": split}, SPECS, {})
    assert not (tmp_path / "s").exists()


def test_read_validates_files(tmp_path):
    root = write_shards(tmp_path / "s", {"train": make_shard_split()}, SPECS, {})
    path = root / "train" / "rgb.npy"
    tokens = np.load(path)
    tokens[2, 0] = 999
    np.save(path, tokens)
    with pytest.raises(DataError, match=r"rgb\.npy: row 2: token ids .* outside \[0, 64\)"):
        open_shards(root, "train")
    np.save(path, tokens[:4])
    with pytest.raises(DataError, match=r"rgb\.npy: tokens of shape \[4, 4\], expected \[5, 4\]"):
        open_shards(root, "train")
    np.save(path, np.zeros((5, 4), dtype=np.float32))
    with pytest.raises(DataError, match=r"rgb\.npy: tokens of dtype float32"):
        open_shards(root, "train")
    np.save(path, np.load(path).astype(np.int32))
    open_shards(root, "train")  # repaired
    np.save(root / "train" / "caption.present.npy", np.ones(5, dtype=np.uint8))
    with pytest.raises(DataError, match=r"caption\.present\.npy: expected bool \[5\]"):
        open_shards(root, "train")
    (root / "COMPLETE.json").unlink()
    with pytest.raises(DataError, match=r"incomplete \(killed mid-write\?\)"):
        open_shards(root, "train")


def test_killed_write_publishes_nothing(tmp_path, monkeypatch):
    from pairless.data import shards as shards_module

    def interrupted(path, array):
        raise KeyboardInterrupt

    monkeypatch.setattr(shards_module, "atomic_save_npy", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_shards(tmp_path / "s", {"train": make_shard_split()}, SPECS, {})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="no token shards here"):
        open_shards(tmp_path / "s", "train")


def test_datasets_and_shards_are_not_confused(tmp_path):
    from data_helpers import make_split

    from pairless.data import open_dataset, write_dataset

    dataset = write_dataset(tmp_path / "data", {"train": make_split(3)})
    shards = write_shards(tmp_path / "shards", {"train": make_shard_split()}, SPECS, {})
    with pytest.raises(DataError, match="this is a dataset, not token shards"):
        open_shards(dataset, "train")
    with pytest.raises(DataError, match="looks like token shards"):
        open_dataset(shards, "train")
