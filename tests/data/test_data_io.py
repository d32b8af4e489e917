"""Dataset write/read round trips in both forms, missing files, killed writes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from data_helpers import make_split

from pairless.data import DataError, open_dataset, write_dataset
from pairless.utils.storage import is_complete


def assert_matches(dataset, split):
    assert dataset.ids == sorted(split.ids) or dataset.ids == list(split.ids)
    for index, sample_id in enumerate(dataset.ids):
        row = split.ids.index(sample_id)
        sample = dataset[index]
        for name, values in split.columns.items():
            if split.present_mask(name)[row]:
                if isinstance(values, list):
                    assert sample[name] == values[row]
                else:
                    np.testing.assert_array_equal(sample[name], values[row])
                    assert sample[name].dtype == values.dtype
            else:
                assert name not in sample
        assert sample["scene"] == split.scenes[row]


@pytest.mark.parametrize("form", ["folder", "packed"])
def test_round_trip(tmp_path, form):
    splits = {"train": make_split(6, seed=1), "val": make_split(3, seed=2, prefix="v")}
    root = write_dataset(tmp_path / "data", splits, form=form, config={"seed": 1})
    assert is_complete(root)
    for name, split in splits.items():
        dataset = open_dataset(root, name)
        assert dataset.form == form and dataset.size == 8 and len(dataset) == len(split.ids)
        assert dataset.modalities == ["rgb", "depth", "normal", "semseg", "det", "caption", "embed"]
        assert_matches(dataset, split)
        values, present = dataset.column("depth")
        assert values.shape == (len(split.ids), 8, 8) and present.sum() == len(split.ids) - 1


def test_folder_layout_and_forms_agree(tmp_path):
    split = make_split(4)
    folder = write_dataset(tmp_path / "f", {"train": split}, form="folder")
    packed = write_dataset(tmp_path / "p", {"train": split}, form="packed")
    assert (folder / "train" / "rgb" / "sub" / "s000.png").is_file()
    assert (folder / "train" / "depth" / "s003.npy").is_file()
    assert not (folder / "train" / "depth" / "s001.npy").exists()  # absent value: no file
    assert (folder / "train" / "_scene" / "s001.json").is_file()
    from_folder, from_packed = open_dataset(folder, "train"), open_dataset(packed, "train")
    assert from_folder.modalities == from_packed.modalities
    for sample_id in from_packed.ids:
        a, b = from_folder[from_folder.index_of(sample_id)], from_packed[from_packed.index_of(sample_id)]
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], np.ndarray):
                np.testing.assert_array_equal(a[key], b[key])
            else:
                assert a[key] == b[key]


def test_user_folder_with_missing_files(tmp_path):
    """A hand-made folder (no manifest, no marker): missing files are absent modalities."""
    split = make_split(4)
    root = write_dataset(tmp_path / "d", {"train": split}, form="folder")
    (root / "manifest.json").unlink()
    (root / "COMPLETE.json").unlink()
    (root / "train" / "rgb" / "s001.png").unlink()
    shutil.rmtree(root / "train" / "caption")
    dataset = open_dataset(root, "train")
    assert "caption" not in dataset.modalities and len(dataset) == 4
    sample = dataset[dataset.index_of("s001")]
    assert "rgb" not in sample and "semseg" in sample
    assert dataset.column("rgb")[1].sum() == 3


@pytest.mark.parametrize("form", ["folder", "packed"])
def test_killed_write_leaves_nothing_readable(tmp_path, monkeypatch, form):
    """An interrupt inside the staged_dir block (after some files are written) publishes nothing."""
    from pairless.data import file_codecs, writer

    calls = {"count": 0}
    real_encode, real_save = file_codecs.encode, writer.atomic_save_npy

    def interrupt_later(function):
        def wrapped(*args, **kwargs):
            calls["count"] += 1
            if calls["count"] > 5:
                raise KeyboardInterrupt
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(file_codecs, "encode", interrupt_later(real_encode))
    monkeypatch.setattr(writer, "atomic_save_npy", interrupt_later(real_save))
    root = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        write_dataset(root, {"train": make_split(3)}, form=form)
    assert calls["count"] > 5 and not root.exists()
    assert list(tmp_path.iterdir()) == []  # the staging folder is cleaned up too
    with pytest.raises(DataError, match="no dataset"):
        open_dataset(root, "train")


def test_packed_without_marker_is_incomplete(tmp_path):
    root = write_dataset(tmp_path / "data", {"train": make_split(3)}, form="packed")
    (root / "COMPLETE.json").write_text("{not json")
    with pytest.raises(DataError, match=r"incomplete \(killed mid-write\?\)"):
        open_dataset(root, "train")
    (root / "COMPLETE.json").unlink()
    with pytest.raises(DataError, match=r"incomplete \(killed mid-write\?\).*no COMPLETE.json"):
        open_dataset(root, "train")


def test_write_refuses_to_replace(tmp_path):
    root = write_dataset(tmp_path / "data", {"train": make_split(3)}, form="packed")
    with pytest.raises(FileExistsError, match="already holds a complete dataset"):
        write_dataset(root, {"train": make_split(3)})
    write_dataset(root, {"train": make_split(2)}, overwrite=True)
    assert len(open_dataset(root, "train")) == 2
    user = tmp_path / "user"
    (user / "train" / "rgb").mkdir(parents=True)
    (user / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not written by pairless"):
        write_dataset(user, {"train": make_split(3)}, overwrite=True)
    assert (user / "notes.txt").read_text() == "mine"


def test_write_validates_values(tmp_path):
    split = make_split(3)
    split.columns["depth"][2, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"split 'train', modality 'depth': row 2 .*NaN or inf"):
        write_dataset(tmp_path / "d", {"train": split})
    assert not (tmp_path / "d").exists()


def test_manifest_content_hash_is_form_independent(tmp_path):
    from pairless.utils.storage import read_json

    split = make_split(4)
    hashes = {form: read_json(write_dataset(tmp_path / form, {"train": split}, form=form) / "manifest.json")
              ["content_hash"] for form in ("folder", "packed")}
    assert hashes["folder"] == hashes["packed"]
    original = split.columns["depth"][0, 0, 0]
    split.columns["depth"][0, 0, 0] += 1.0
    changed = read_json(write_dataset(tmp_path / "changed",
                                      {"train": split}) / "manifest.json")["content_hash"]
    assert changed != hashes["packed"]
    split.columns["depth"][0, 0, 0] = original
    split.columns["depth"][1, 0, 0] += 1.0  # row 1 is absent: its placeholder does not count
    same = read_json(write_dataset(tmp_path / "same", {"train": split}) / "manifest.json")["content_hash"]
    assert same == hashes["packed"]
