"""`pairless tokenizers train` and `pairless tokenize` end to end on a tiny fragmented world."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pairless.commands import tokenize as shards
from pairless.commands import tokenizers as cli
from pairless.data import SplitData, open_dataset, write_dataset
from pairless.data.shards import open_shards
from pairless.tokenizers import load_tokenizer
from pairless.tokenizers.build import train_all
from pairless.tokenizers.encode_dataset import tokenize_dataset
from pairless.tokenizers.neural_training import preset_config
from pairless.utils.storage import hash_files, is_complete, read_json
from pairless.world.samples import render_world

SIZE = 16


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def fragmented_world(tmp_path_factory):
    """A 16x16 world where depth is missing from every third sample and caption from every fourth."""
    root = tmp_path_factory.mktemp("world") / "data"
    columns, scenes = render_world(72, size=SIZE, seed=0, progress=False)
    splits = {}
    for name, indices in (("train", np.arange(0, 56)), ("val", np.arange(56, 72))):
        split_columns = {m: [v[i] for i in indices] if isinstance(v, list) else v[indices]
                         for m, v in columns.items()}
        present = {"depth": indices % 3 != 0, "caption": indices % 4 != 0}
        splits[name] = SplitData(ids=[f"{i:04d}" for i in indices], columns=split_columns, present=present,
                                 scenes=[scenes[i] for i in indices])
    write_dataset(root, splits, form="packed")
    return root


@pytest.fixture(scope="module")
def trained(fragmented_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "tokenizers"
    argv = ["train", "--data", str(fragmented_world), "--out", str(out), "--preset", "micro",
            "--set", "steps=4", "--set", "spatial.width=8", "--set", "vector.hidden=16",
            "--set", "text.length_margin=24"]
    assert cli.main(argv) == 0
    return out


def test_train_writes_every_modality_and_the_report(trained, fragmented_world):
    assert is_complete(trained)
    for modality in ("rgb", "depth", "normal", "semseg", "det", "caption", "embed", "text"):
        assert is_complete(trained / modality), modality
    training = read_json(trained / "training.json")["modalities"]
    # Fragmented data: each tokenizer saw exactly the training samples that have its modality.
    assert training["depth"]["num_train_samples"] == int(np.sum(np.arange(56) % 3 != 0))
    assert training["caption"]["num_train_samples"] == int(np.sum(np.arange(56) % 4 != 0))
    assert training["rgb"]["num_train_samples"] == 56
    report = read_json(trained / "report.json")
    assert set(report) == {"rgb", "depth", "normal", "semseg", "det", "caption", "embed"}
    assert report["depth"]["num_samples"] == int(np.sum(np.arange(56, 72) % 3 != 0))
    assert report["caption"]["exact_round_trip"] == 1.0 and report["det"]["exact_round_trip"] == 1.0
    assert 0.0 <= report["semseg"]["miou"] <= 1.0 and np.isfinite(report["rgb"]["psnr"])
    assert (trained / "report.md").read_text().startswith("# Tokenizer reconstruction")


def test_rerun_does_not_retrain(trained, fragmented_world, tmp_path):
    before = (trained / "rgb" / "weights.safetensors").stat().st_mtime_ns
    (trained / "COMPLETE.json").unlink()  # force the per-modality resume path
    assert cli.main(["train", "--data", str(fragmented_world), "--out", str(trained), "--preset", "micro",
                     "--set", "steps=4", "--set", "spatial.width=8", "--set", "vector.hidden=16",
                     "--set", "text.length_margin=24"]) == 0
    assert (trained / "rgb" / "weights.safetensors").stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="complete tokenizer folder"):
        train_all(fragmented_world, trained, preset_config("micro"), ["rgb"])
    # An unfinished folder with a modality trained otherwise: refused, and nothing in it rewritten.
    partial = tmp_path / "partial"
    shutil.copytree(trained, partial)
    (partial / "COMPLETE.json").unlink()
    config_before = (partial / "config.json").read_bytes()
    with pytest.raises(FileExistsError, match="different config"):
        train_all(fragmented_world, partial, preset_config("micro"), ["rgb"])
    assert (partial / "config.json").read_bytes() == config_before


def test_a_complete_output_is_reused_only_for_the_same_request(trained, fragmented_world, tmp_path, capsys):
    argv = ["train", "--data", str(fragmented_world), "--out", str(trained), "--preset", "micro",
            "--set", "steps=4", "--set", "spatial.width=8", "--set", "vector.hidden=16",
            "--set", "text.length_margin=24"]
    marker = (trained / "COMPLETE.json").read_bytes()
    capsys.readouterr()
    assert cli.main(argv) == 0 and "nothing to do" in capsys.readouterr().err
    # Other settings or other data for the same --out: refused, naming the field, the folder untouched.
    assert cli.main([*argv, "--set", "steps=5"]) == 1
    assert "config.steps=4" in capsys.readouterr().err
    other_data = tmp_path / "other"
    shutil.copytree(fragmented_world, other_data)
    assert cli.main([*argv[:2], str(other_data), *argv[3:]]) == 1
    assert f"data={str(fragmented_world.resolve())!r}" in capsys.readouterr().err
    assert (trained / "COMPLETE.json").read_bytes() == marker
    # Token shards likewise: the same inputs are a no-op, other tokenizers are refused by name.
    out = tmp_path / "shards"
    base = ["--data", str(fragmented_world), "--out", str(out)]
    assert shards.main([*base, "--tokenizers", str(trained)]) == 0
    assert shards.main([*base, "--tokenizers",
                        str(trained)]) == 0 and "nothing to do" in capsys.readouterr().err
    copy = tmp_path / "tok-copy"
    shutil.copytree(trained, copy)
    assert shards.main([*base, "--tokenizers", str(copy)]) == 1
    assert "tokenizers=" in capsys.readouterr().err
    assert shards.main([*base, "--tokenizers", str(trained), "--truncate-text"]) == 1
    assert "truncate_text=False" in capsys.readouterr().err


def test_the_tokenizer_hash_leaves_out_wall_clock_times(trained, tmp_path):
    copy = tmp_path / "tok"
    shutil.copytree(trained, copy)
    assert hash_files(copy) == read_json(trained / "COMPLETE.json")["content_hash"]
    timings = read_json(copy / "timings.json")
    assert timings["total_seconds"] > 0 and set(timings["modalities"]) >= {"rgb", "caption"}
    (copy / "timings.json").write_text(json.dumps({"total_seconds": 1.0}))
    nested = read_json(copy / "rgb" / "COMPLETE.json")
    (copy / "rgb" / "COMPLETE.json").write_text(json.dumps({**nested, "train_seconds": 123.0}))
    assert hash_files(copy) == read_json(trained / "COMPLETE.json")["content_hash"]
    assert "train_seconds" not in json.dumps(read_json(copy / "training.json"))
    (copy / "rgb" / "config.json").write_text((copy / "rgb" / "config.json").read_text() + " ")
    assert hash_files(copy) != read_json(trained / "COMPLETE.json")["content_hash"]


def test_tokenize_matches_direct_encoding_and_keeps_missing_missing(trained, fragmented_world, tmp_path):
    out_small = tmp_path / "shards_small"
    out_large = tmp_path / "shards_large"
    assert shards.main(["--data", str(fragmented_world), "--tokenizers", str(trained), "--out",
                        str(out_small),
                        "--batch-size", "5"]) == 0
    tokenize_dataset(fragmented_world, trained, out_large, batch_size=1000)
    for split in ("train", "val"):
        small, large = open_shards(out_small, split), open_shards(out_large, split)
        dataset = open_dataset(fragmented_world, split)
        assert small.ids == dataset.ids and small.scenes == dataset.scenes
        for modality in dataset.modalities:
            np.testing.assert_array_equal(small.tokens[modality], large.tokens[modality])
            values, present = dataset.column(modality)
            np.testing.assert_array_equal(small.present[modality], present)
            assert not small.tokens[modality][~present].any()
            tokenizer = load_tokenizer(trained, modality)
            rows = np.flatnonzero(present)
            batch = [values[i] for i in rows] if tokenizer.kind == "text" else np.asarray(values[rows])
            direct = tokenizer.encode(batch)
            assert torch.equal(torch.from_numpy(np.asarray(small.tokens[modality][rows])).long(), direct)
            assert small.specs[modality] == tokenizer.spec
    depth_present = open_shards(out_small, "train").present["depth"]
    assert depth_present.sum() == int(np.sum(np.arange(56) % 3 != 0))


def test_tokenize_refuses_too_long_text_unless_truncating(trained, fragmented_world, tmp_path, capsys):
    short = tmp_path / "tokenizers"
    shutil.copytree(trained, short)
    config = read_json(short / "caption" / "config.json")
    (short / "caption" / "config.json").write_text(json.dumps({**config, "num_tokens": 8, "truncate": False}))
    argv = ["--data", str(fragmented_world), "--tokenizers", str(short), "--out", str(tmp_path / "shards")]
    assert shards.main(argv) == 1
    assert "caption" in capsys.readouterr().err and not is_complete(tmp_path / "shards")
    assert shards.main([*argv, "--truncate-text"]) == 0
    caption = open_shards(tmp_path / "shards", "train").tokens["caption"]
    assert caption.shape[1] == 8


def test_tokenize_as_webdataset_gives_the_packed_tokens_in_tar_shards(trained, fragmented_world, tmp_path):
    from pairless.data.shards import open_shards
    from pairless.data.streamed_shards import StreamedShards, is_streamed

    common = ["--data", str(fragmented_world), "--tokenizers", str(trained)]
    assert shards.main([*common, "--out", str(tmp_path / "packed")]) == 0
    assert shards.main([*common, "--out", str(tmp_path / "wds"), "--format", "webdataset",
                        "--shard-samples", "7"]) == 0
    assert is_streamed(tmp_path / "wds") and not (tmp_path / "wds.packed").exists()
    packed, streamed = open_shards(tmp_path / "packed", "train"), StreamedShards(tmp_path / "wds", "train")
    ids, present, _, _ = streamed.metadata()
    assert ids == list(packed.ids) and streamed.sizes[0] == 7
    for name in packed.specs:
        assert np.array_equal(present[:, list(streamed.specs).index(name)], packed.present[name])
    tokens = streamed.read(1, list(streamed.specs))
    for name in packed.specs:
        rows = np.arange(7, 14)
        has = packed.present[name][rows]
        assert np.array_equal(tokens[name][has], np.asarray(packed.tokens[name])[rows][has])
    assert shards.main([*common, "--out", str(tmp_path / "wds"), "--format", "webdataset"]) == 0  # reused
