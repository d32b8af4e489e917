"""``pairless world``: the dataset it writes (both forms), the split, and its argument errors."""

from __future__ import annotations

import numpy as np
import pytest

from pairless.commands.world import main
from pairless.data import open_dataset
from pairless.world import render_world
from pairless.world.write import split_indices


@pytest.mark.parametrize("form", ["packed", "folder"])
def test_world_command_writes_the_rendered_scenes(tmp_path, capsys, form):
    out = tmp_path / "world"
    assert main(["--out", str(out), "--num-scenes", "20", "--size", "16", "--seed", "4",
                 "--val-fraction", "0.25", "--format", form]) == 0
    columns, scenes = render_world(20, 16, seed=4, progress=False)
    train, val = open_dataset(out, "train"), open_dataset(out, "val")
    assert (len(train), len(val)) == (15, 5)
    assert not set(train.ids) & set(val.ids)
    assert sorted(train.ids + val.ids) == [f"{i:06d}" for i in range(20)]
    for dataset in (train, val):
        for position in (0, len(dataset) - 1):
            sample = dataset[position]
            index = int(dataset.ids[position])
            for name in ("rgb", "depth", "normal", "semseg", "embed"):
                np.testing.assert_array_equal(sample[name], columns[name][index], err_msg=name)
            assert sample["det"] == columns["det"][index]
            assert sample["caption"] == columns["caption"][index]
            assert sample["scene"] == scenes[index]
    # The same config again is a no-op success; a different one is refused unless told to overwrite.
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    assert main(["--out", str(out), "--num-scenes", "20", "--size", "16", "--seed", "4",
                 "--val-fraction", "0.25", "--format", form]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    assert main(["--out", str(out), "--num-scenes", "20", "--size", "16", "--format", form]) == 1
    assert "world.seed=4" in capsys.readouterr().err
    assert main(["--out", str(out), "--num-scenes", "8", "--size", "16", "--format", form,
                 "--overwrite"]) == 0
    assert len(open_dataset(out, "train")) + len(open_dataset(out, "val")) == 8


def test_split_is_seeded_and_complete():
    first = split_indices(100, 0.1, seed=3)
    assert len(first["val"]) == 10 and len(first["train"]) == 90
    assert np.array_equal(np.sort(np.concatenate(list(first.values()))), np.arange(100))
    assert np.array_equal(first["val"], split_indices(100, 0.1, seed=3)["val"])
    assert not np.array_equal(first["val"], split_indices(100, 0.1, seed=4)["val"])
    assert list(split_indices(10, 0.0, seed=0)) == ["train"]
    assert len(split_indices(3, 0.01, seed=0)["val"]) == 1


def test_bad_arguments_name_the_field(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "x"), "--size", "3"]) == 2
    assert "world.size" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x"), "--format", "zip"]) == 2
    assert "world.format" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_second_writer_is_refused_by_the_lock(tmp_path, capsys):
    from pairless.utils.storage import FolderLock

    out = tmp_path / "world"
    with FolderLock(out):
        assert main(["--out", str(out), "--num-scenes", "4", "--size", "16"]) == 1
    assert "another pairless process is writing" in capsys.readouterr().err
    assert not out.exists()
    assert main(["--out", str(out), "--num-scenes", "4", "--size", "16"]) == 0
