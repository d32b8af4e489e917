"""Modalities declared in a file next to the data (pairless.data.declared): no edit to the package."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pairless import cli
from pairless import modalities as registry
from pairless.data import DataError, open_dataset
from pairless.data.declared import RECORD_NAME, declare, read_declaration

DECLARATION = """\
modalities:
  thermal:
    kind: image
    dtype: float32
    extensions: [.npy]
    value_range: [0, 60]
    viz: depth
  tissue:
    kind: image
    extensions: [.png]
    classes: [background, tumour, stroma]
  rna:
    kind: vector
    dim: 8
"""
DECLARED = ("thermal", "tissue", "rna")
SIZE = 16


@pytest.fixture(autouse=True)
def clean_registry():
    yield
    for name in DECLARED:
        registry.unregister(name)


def make_folder(root, num=6, declaration=DECLARATION):
    """rgb everywhere; thermal in even samples, tissue in odd ones (never together); rna in all."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for index in range(num):
            name = f"s{index}"
            folder = root / split
            for modality in ("rgb", "thermal", "tissue", "rna"):
                (folder / modality).mkdir(parents=True, exist_ok=True)
            rgb = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(folder / "rgb" / f"{name}.png")
            if index % 2 == 0:
                thermal = rng.uniform(10, 40, (SIZE, SIZE)).astype(np.float32)
                np.save(folder / "thermal" / f"{name}.npy", thermal)
            else:
                Image.fromarray(rng.integers(0, 3, (SIZE, SIZE), dtype=np.uint8)).save(
                    folder / "tissue" / f"{name}.png")
            np.save(folder / "rna" / f"{name}.npy", rng.normal(size=8).astype(np.float32))
    if declaration is not None:
        (root / "modalities.yaml").write_text(declaration)
    return root


def test_a_declared_folder_opens_with_no_code(tmp_path):
    root = make_folder(tmp_path / "data")
    dataset = open_dataset(root, "val")
    assert dataset.modalities == ["rgb", "thermal", "tissue", "rna"]  # built-ins, then declaration order
    thermal, present = dataset.column("thermal")
    assert thermal.shape == (6, SIZE, SIZE) and thermal.dtype == np.float32
    assert present.tolist() == [True, False] * 3
    tissue, present = dataset.column("tissue")
    assert tissue.dtype == np.uint8 and present.tolist() == [False, True] * 3
    entry = registry.get("tissue")
    assert entry.num_classes == 3 and entry.viz == "labels" and entry.normalization == "labels"
    assert registry.get("thermal").codec == "npy" and registry.get("rna").dim == 8
    # opening it again (another command in the same process) is a no-op, not a conflict
    open_dataset(root, "train")


@pytest.mark.parametrize("suffix,text", [
    (".json", json.dumps({"modalities": {"rna": {"kind": "vector", "dim": 8}}})),
    (".toml", "[modalities.rna]\nkind = 'vector'\ndim = 8\n"),
])
def test_json_and_toml_declarations(tmp_path, suffix, text):
    path = tmp_path / f"modalities{suffix}"
    path.write_text(text)
    assert declare(path) == ["rna"] and registry.get("rna").kind == "vector"


@pytest.mark.parametrize("body,message", [
    ("modalities:\n  thermal:\n    kind: image\n    colour: red\n",
     r"modalities\.thermal\.colour: Extra inputs are not permitted"),
    ("modalities:\n  thermal:\n    kind: picture\n", r"modalities\.thermal\.kind: Input should be"),
    ("modalities:\n  rgb:\n    kind: image\n", r"modalities\.rgb: 'rgb' is a built-in modality"),
    ("modalities:\n  rna:\n    kind: vector\n", r"modalities\.rna: .*dim"),
    ("modalities:\n  tissue:\n    kind: image\n    dtype: float32\n    extensions: [.png]\n",
     r"modalities\.tissue: .*8-bit \(uint8\)"),
    ("modalities:\n  tissue:\n    kind: image\n    extensions: [.tif]\n",
     r"modalities\.tissue\.extensions: .*'\.tif' is not readable"),
    ("modalities:\n  tissue:\n    kind: image\n    classes: [a, b]\n    num_classes: 3\n",
     r"modalities\.tissue: .*classes lists 2 names but num_classes is 3"),
    ("thermal:\n  kind: image\n", r"expected one top-level key 'modalities'"),
    ("modalities: [unclosed\n", r"not valid yaml"),
])
def test_a_wrong_declaration_names_the_file_and_the_key(tmp_path, body, message):
    path = tmp_path / "modalities.yaml"
    path.write_text(body)
    with pytest.raises(DataError, match=message) as error:
        read_declaration(path)
    assert str(path) in str(error.value)


def test_a_conflicting_declaration_is_refused(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("modalities:\n  rna:\n    kind: vector\n    dim: 8\n")
    second.write_text("modalities:\n  rna:\n    kind: vector\n    dim: 9\n")
    declare(first)
    with pytest.raises(DataError, match=r"b\.yaml: modalities\.rna: declared differently from .*a\.yaml"):
        declare(second)


def test_a_sample_that_contradicts_the_declaration_names_its_file_and_the_key(tmp_path):
    root = make_folder(tmp_path / "data")
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(root / "val" / "tissue" / "s1.png")
    with pytest.raises(DataError, match=r"tissue/s1\.png: image has 3 channel.*declared in "
                                        r".*modalities\.yaml: modalities\.tissue\.channels"):
        open_dataset(root, "val")


def test_values_outside_the_declared_range_are_bad_samples(tmp_path):
    root = make_folder(tmp_path / "data")
    np.save(root / "val" / "thermal" / "s2.npy", np.full((SIZE, SIZE), 99.0, np.float32))
    with pytest.raises(DataError, match=r"thermal/s2\.npy: values in \[99, 99\] outside the range \[0, 60\].*"
                                        r"modalities\.thermal\.value_range"):
        open_dataset(root, "val")
    dataset = open_dataset(root, "val", on_bad_sample="skip")
    assert dataset.column("thermal")[1].tolist() == [True, False, False, False, True, False]
    assert [path.endswith("s2.npy") for path, _ in dataset.bad_samples] == [True]


def test_tokenizers_and_shards_carry_the_declaration(tmp_path):
    from pairless.data.shards import open_shards
    from pairless.tokenizers import load_tokenizer
    from pairless.tokenizers.build import build_tokenizers
    from pairless.tokenizers.encode_dataset import write_token_shards
    from pairless.tokenizers.neural_training import preset_config

    root = make_folder(tmp_path / "data")
    config = preset_config("micro").model_copy(update={"steps": 2, "report_samples": 4})
    build_tokenizers(root, tmp_path / "tok", config, threads=1)
    write_token_shards(root, tmp_path / "tok", tmp_path / "shards", threads=1)
    for folder in (tmp_path / "tok", tmp_path / "shards"):
        assert set(json.loads((folder / RECORD_NAME).read_text())["modalities"]) == set(DECLARED)
    for name in DECLARED:  # a later process knows nothing about them ...
        registry.unregister(name)
    shards = open_shards(tmp_path / "shards", "val")  # ... until it opens the shards or the tokenizers
    assert set(DECLARED) <= set(shards.specs) and registry.get("tissue").num_classes == 3
    for name in DECLARED:
        registry.unregister(name)
    tokenizer = load_tokenizer(tmp_path / "tok", "thermal")
    decoded = tokenizer.decode(np.array(shards.tokens["thermal"][:2]))
    assert decoded.shape == (2, SIZE, SIZE) and registry.get("thermal").viz == "depth"


def test_modalities_file_option_declares_for_any_command(tmp_path):
    root = make_folder(tmp_path / "data", declaration=None)
    elsewhere = tmp_path / "mine.yaml"
    elsewhere.write_text(DECLARATION)
    out = tmp_path / "grid.png"
    assert cli.main(["preview", str(root), "--out", str(out)]) == 1  # unknown folders without it
    assert cli.main(["--modalities-file", str(elsewhere), "preview", str(root), "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    assert cli.split_modalities_file(["a", "--modalities-file=x.yaml", "b"]) == (["x.yaml"], ["a", "b"])


@pytest.mark.parametrize("channels", [0, 1])
@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 1)])
def test_a_single_channel_map_reads_with_channels_0_or_1(tmp_path, channels, shape):
    """Both declarations take a plain map stored either way; the value has the declared shape."""
    (tmp_path / "train" / "heat").mkdir(parents=True)
    (tmp_path / "modalities.yaml").write_text("modalities:\n  heat:\n    kind: image\n    dtype: float32\n"
                                              f"    extensions: [.npy]\n    channels: {channels}\n")
    np.save(tmp_path / "train" / "heat" / "a.npy", np.ones(shape, np.float32))
    try:
        values = np.asarray(open_dataset(tmp_path, "train").column("heat")[0])
    finally:
        registry.unregister("heat")
    assert values.shape == ((1, 8, 8, 1) if channels else (1, 8, 8))
