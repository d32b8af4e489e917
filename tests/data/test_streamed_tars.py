"""Streamed token shards whose tars were cut short (a copy that stopped, a full disk): reading a shard stops
with an error naming the tar and the member it stopped at, whether the cut falls inside a member or between
two (where Python's tarfile ends without a word and the rows after the cut would silently stay zero)."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from train_helpers import make_shards

from pairless.data.streamed_shards import StreamedShards, write_streamed
from pairless.data.validate import DataError


@pytest.fixture
def streamed(tmp_path):
    return write_streamed(make_shards(tmp_path / "packed", count=20), tmp_path / "wds", shard_samples=10)


def _member_offsets(tar) -> list[tuple[str, int, int]]:
    """(name, offset of its first header block, offset of its data) per member."""
    with tarfile.open(tar) as archive:
        return [(info.name, info.offset, info.offset_data) for info in archive.getmembers()]


def test_an_intact_shard_reads_every_present_row(streamed):
    tokens = StreamedShards(streamed, "train").read(0, ["rgb"])["rgb"]
    assert tokens.shape[0] == 10 and not (tokens == 0).all(axis=1).any()


@pytest.mark.parametrize("where", ["between members", "inside a member's data", "inside a header"])
def test_a_cut_tar_names_the_file_and_the_member(streamed, where):
    tar = streamed / "train" / "rgb" / "shard-000000.tar"
    members = _member_offsets(tar)
    _, third_start, third_data = members[2]
    cut = {"between members": third_start, "inside a member's data": third_data + 100,
           "inside a header": third_start + 100}[where]
    tar.write_bytes(tar.read_bytes()[:cut])
    with pytest.raises(DataError) as error:
        StreamedShards(streamed, "train").read(0, ["rgb"])
    message = str(error.value)
    assert str(tar) in message and "cut short" in message and "after member 000000001.npy" in message, message


def test_a_member_that_is_not_an_array_is_named(streamed):
    tar = streamed / "train" / "depth" / "shard-000001.tar"
    with tarfile.open(tar) as archive:
        members = [(info, archive.extractfile(info).read()) for info in archive.getmembers()]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for info, data in members:
            data = b"not an array" if info.name == "000000013.npy" else data
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    tar.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=rf"^{tar}: member 000000013.npy: not a token array"):
        StreamedShards(streamed, "train").read(1, ["depth"])
    assert np.asarray(StreamedShards(streamed, "train").read(0, ["depth"])["depth"]).shape[0] == 10
