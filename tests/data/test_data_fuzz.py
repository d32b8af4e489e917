"""Property test: a randomly damaged folder dataset loads, or fails with a clear DataError; nothing else."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from data_helpers import make_split
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pairless.data import DataError, open_dataset, write_dataset

EXTENSIONS = [".png", ".jpg", ".npy", ".txt", ".json", ".bin", ""]


def random_npy(data) -> bytes:
    dtype = data.draw(st.sampled_from(["uint8", "int64", "float16", "float32", "float64", "bool",
                                       "complex64"]))
    shape = tuple(data.draw(st.lists(st.integers(0, 9), min_size=0, max_size=4)))
    array = np.random.default_rng(data.draw(st.integers(0, 100))).normal(size=shape).astype(dtype)
    if data.draw(st.booleans()) and array.size and array.dtype.kind == "f":
        array.flat[0] = data.draw(st.sampled_from([np.nan, np.inf, -1.0, 0.0]))
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def random_png(data) -> bytes:
    mode = data.draw(st.sampled_from(["L", "RGB", "RGBA", "P", "I;16", "1", "LA"]))
    side = data.draw(st.integers(1, 10))
    buffer = io.BytesIO()
    Image.new(mode, (side, data.draw(st.sampled_from([side, side + 1]))), 1).save(buffer, format="PNG")
    return buffer.getvalue()


def damage(split: Path, data) -> None:
    files = sorted(p for p in split.rglob("*") if p.is_file())
    folders = sorted(p for p in split.iterdir() if p.is_dir())
    kind = data.draw(st.sampled_from(
        ["truncate", "flip", "delete", "npy", "png", "text", "new_file", "folder", "empty_folder"]))
    target = data.draw(st.sampled_from(files)) if files else None
    if kind == "truncate" and target:
        content = target.read_bytes()
        target.write_bytes(content[: data.draw(st.integers(0, max(0, len(content) - 1)))])
    elif kind == "flip" and target:
        content = bytearray(target.read_bytes())
        if content:
            content[data.draw(st.integers(0, len(content) - 1))] ^= data.draw(st.integers(1, 255))
        target.write_bytes(bytes(content))
    elif kind == "delete" and target:
        target.unlink()
    elif kind == "npy" and target:
        target.write_bytes(random_npy(data))
    elif kind == "png" and target:
        target.write_bytes(random_png(data))
    elif kind == "text" and target:
        target.write_bytes(data.draw(st.binary(max_size=40)))
    elif kind == "new_file" and folders:
        folder = data.draw(st.sampled_from(folders))
        name = data.draw(st.sampled_from(["s001", "new", "sub/new",
                                          "x.y"])) + data.draw(st.sampled_from(EXTENSIONS))
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data.draw(st.binary(max_size=30)))
    elif kind == "folder":
        (split / data.draw(st.sampled_from(["lidar", "_extra", "RGB", "depth2"]))).mkdir(exist_ok=True)
    elif kind == "empty_folder" and folders:
        shutil.rmtree(data.draw(st.sampled_from(folders)))


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    """A user-style folder dataset (no manifest), copied for each example."""
    root = write_dataset(tmp_path_factory.mktemp("fuzz") / "data", {"train": make_split(4)}, form="folder")
    (root / "manifest.json").unlink()
    (root / "COMPLETE.json").unlink()
    return root


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), num_damages=st.integers(1, 4), skip=st.booleans())
def test_damaged_folder_loads_or_raises_data_error(base_folder, data, num_damages, skip):
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "data"
        shutil.copytree(base_folder, root)
        for _ in range(num_damages):
            damage(root / "train", data)
        try:
            dataset = open_dataset(root, "train", on_bad_sample="skip" if skip else "error")
        except DataError as error:
            assert str(error)  # a message naming what is wrong
            return
        # A successful load is consistent: every sample has something, every value is the expected kind.
        assert len(dataset) > 0 and len(dataset.ids) == len(set(dataset.ids))
        for index in range(len(dataset)):
            sample = dataset[index]
            assert set(sample) - {"scene"}
            for name, value in sample.items():
                if name in ("det", "caption"):
                    assert isinstance(value, str) and value.strip()
                elif name == "depth":
                    assert value.dtype == np.float32 and value.shape == (dataset.size, dataset.size)
                    assert np.all(value > 0)
                elif name == "rgb":
                    assert value.dtype == np.uint8 and value.shape == (dataset.size, dataset.size, 3)
