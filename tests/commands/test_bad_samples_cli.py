"""A messy real folder through `pairless tokenizers train` and `pairless tokenize`: --on-bad-sample."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pairless import cli
from pairless.data.shards import open_shards

SIZE = 16


def messy_folder(root):
    """Eight clean samples per split, then one of every kind of junk in train."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for index in range(8):
            name = f"s{index}"
            for modality in ("rgb", "depth", "caption"):
                (root / split / modality).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(
                root / split / "rgb" / f"{name}.png")
            depth = rng.uniform(1, 5, (SIZE, SIZE)).astype(np.float32)
            np.save(root / split / "depth" / f"{name}.npy", depth)
            (root / split / "caption" / f"{name}.txt").write_text(f"a red cube number {index}.")
    train = root / "train"
    junk = {  # file -> the words of its reason
        train / "rgb" / "Thumbs.db": "wrong extension '.db'",
        train / "caption" / "notes.csv": "wrong extension '.csv'",
        train / "rgb" / "s0.png": "not square",  # replaced below by an image of another shape
        train / "rgb" / "s1.png": "truncated",
        train / "depth" / "s2.npy": "NaN",
        train / "caption" / "s3.txt": "empty text",
        train / "caption" / "s4.txt": "UTF-8",
    }
    (train / "rgb" / "Thumbs.db").write_bytes(b"\x00thumbnail cache")
    (train / "caption" / "notes.csv").write_text("id,comment\ns1,blurry\n")
    Image.fromarray(np.zeros((SIZE, SIZE + 4, 3), np.uint8)).save(train / "rgb" / "s0.png")
    whole = (train / "rgb" / "s1.png").read_bytes()
    (train / "rgb" / "s1.png").write_bytes(whole[: len(whole) // 2])
    depth = np.ones((SIZE, SIZE), np.float32)
    depth[3, 3] = np.nan
    np.save(train / "depth" / "s2.npy", depth)
    (train / "caption" / "s3.txt").write_text("   ")
    (train / "caption" / "s4.txt").write_bytes(b"caf\xe9 au lait")
    # ignored without a word: hidden files and files beside the modality folders
    (train / "rgb" / ".DS_Store").write_bytes(b"junk")
    (train / "notes.csv").write_text("not a modality folder\n")
    return junk


TOKENIZE = ["tokenizers", "train", "--preset", "micro", "--set", "steps=2", "--set", "text.length_margin=8"]


def test_error_mode_stops_naming_the_first_bad_file(tmp_path, capsys):
    messy_folder(tmp_path / "data")
    code = cli.main([*TOKENIZE, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "tok")])
    assert code == 1
    error = capsys.readouterr().err
    assert "train/" in error and ("Thumbs.db" in error or "notes.csv" in error or "s0.png" in error)
    assert not (tmp_path / "tok" / "COMPLETE.json").exists()


def test_skip_mode_counts_and_lists_every_bad_file(tmp_path, capsys):
    junk = messy_folder(tmp_path / "data")
    data, tok, shards = tmp_path / "data", tmp_path / "tok", tmp_path / "shards"
    assert cli.main([*TOKENIZE, "--data", str(data), "--out", str(tok), "--on-bad-sample", "skip"]) == 0
    err = capsys.readouterr().err
    assert f"skipped {len(junk)} bad file(s) in train" in err
    listed = dict(map(tuple, json.loads((tok / "bad_samples.json").read_text())["train"]))
    assert set(listed) == {str(path) for path in junk}
    for path, words in junk.items():
        assert words.lower() in listed[str(path)].lower(), (path, listed[str(path)])
    assert (tok / "COMPLETE.json").is_file()

    # tokenize: the same files are left out, each sample keeps its other modalities
    assert cli.main(["tokenize", "--data", str(data), "--tokenizers", str(tok), "--out", str(shards)]) == 1
    assert cli.main(["tokenize", "--data", str(data), "--tokenizers", str(tok), "--out", str(shards),
                     "--on-bad-sample", "skip"]) == 0
    train = open_shards(shards, "train")
    assert train.ids == [f"s{i}" for i in range(8)]
    assert train.present["rgb"].tolist() == [False, False] + [True] * 6
    assert train.present["depth"].tolist() == [True, True, False] + [True] * 5
    assert train.present["caption"].tolist() == [True] * 3 + [False, False] + [True] * 3
    manifest = json.loads((shards / "manifest.json").read_text())
    assert {path for path, _ in manifest["bad_samples"]["train"]} == {str(path) for path in junk}
    assert "val" not in manifest["bad_samples"]


@pytest.mark.parametrize("command", [["tokenize", "--data", "d", "--tokenizers", "t", "--out", "o"],
                                     [*TOKENIZE, "--data", "d", "--out", "o"]])
def test_on_bad_sample_refuses_other_values(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([*command, "--on-bad-sample", "ignore"])
    assert "invalid choice: 'ignore'" in capsys.readouterr().err
