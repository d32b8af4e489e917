"""Adding a modality is one registry entry: a folder with a new modality then loads and previews."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pairless import modalities
from pairless.commands.preview import main as preview_main
from pairless.data import DataError, open_dataset


@pytest.fixture
def histology():
    entry = modalities.register(modalities.Modality(
        name="histology", kind="image", channels=1, dtype="uint8", extensions=(".png",
                                                                               ), codec="png", viz="gray"))
    yield entry
    modalities.unregister("histology")


def make_folder(root, names=("a", "b", "c")):
    rng = np.random.default_rng(0)
    for index, name in enumerate(names):
        (root / "val" / "histology").mkdir(parents=True, exist_ok=True)
        (root / "val" / "rgb").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16),
                                     dtype=np.uint8)).save(root / "val" / "histology" / f"{name}.png")
        if index != 1:
            Image.fromarray(rng.integers(0, 256, (16, 16, 3),
                                         dtype=np.uint8)).save(root / "val" / "rgb" / f"{name}.png")


def test_unregistered_folder_is_refused(tmp_path):
    make_folder(tmp_path)
    with pytest.raises(DataError,
                       match=r"'histology' is not a registered modality.*Declare yours in .*\.yaml"):
        open_dataset(tmp_path, "val")


def test_registered_modality_loads_with_no_other_change(tmp_path, histology):
    make_folder(tmp_path)
    dataset = open_dataset(tmp_path, "val")
    assert dataset.modalities == ["rgb", "histology"] and dataset.ids == ["a", "b", "c"]
    values, present = dataset.column("histology")
    assert values.shape == (3, 16, 16, 1) and values.dtype == np.uint8 and present.all()
    expected = np.asarray(Image.open(tmp_path / "val" / "histology" / "b.png"))
    np.testing.assert_array_equal(dataset[1]["histology"][..., 0], expected)
    assert "rgb" not in dataset[1]
    out = tmp_path / "grid.png"
    assert preview_main([str(tmp_path), "--out", str(out)]) == 0 and out.stat().st_size > 0
    # The new modality is validated like the built-in ones.
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "val" / "histology" / "c.png")
    with pytest.raises(DataError, match=r"histology/c\.png: image has 3 channel\(s\).*'histology' expects 1"):
        open_dataset(tmp_path, "val")


def test_packed_dataset_needs_its_modalities_registered(tmp_path, histology):
    from pairless.data import SplitData, write_dataset

    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    root = write_dataset(tmp_path / "packed",
                         {"val": SplitData(ids=["a", "b"], columns={"histology": images})})
    np.testing.assert_array_equal(open_dataset(root, "val")[1]["histology"], images[1])
    modalities.unregister("histology")
    with pytest.raises(DataError, match=r"histology\.npy: modality 'histology' is not registered.*register"):
        open_dataset(root, "val")
