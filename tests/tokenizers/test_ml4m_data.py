"""``pairless import-4m-data`` (pairless/tokenizers/ml4m_data.py, pairless/data/ml4m_layout.py) on
ml-4m-layout folders the tests write (tars and plain files, int16 tokens of two crops, raw captions and det
JSON, a missing modality, a corrupt member), with the test fixture's mapping (tiny grids and vocabularies)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from ml4m_layout_helpers import sample_values, write_layout, write_vocabulary

from pairless.cli import main as cli
from pairless.data.shards import open_shards, read_manifest
from pairless.data.streamed_shards import StreamedShards
from pairless.data.validate import DataError
from pairless.tokenizers import load_tokenizer
from pairless.tokenizers.ml4m_data import Ml4mDataConfig, import_ml4m_data
from pairless.utils.storage import read_json

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ml4m"
MAPPING = FIXTURE / "modalities.json"
# the fixture's grids and vocabularies
GRIDS = {"tok_rgb@224": (4, 4, 64), "tok_depth@224": (4, 4, 48), "tok_normal@224": (2, 4, 40)}


def _dataset(root: Path, train: int = 24, val: int = 8, corrupt: dict | None = None) -> dict:
    """ROOT/train as tars (depth missing for rows 3 and 7), ROOT/val as plain files; the values written."""
    values = {"train": sample_values(train, GRIDS, seed=0), "val": sample_values(val, GRIDS, seed=1)}
    write_layout(root / "train", values["train"], "tars", missing={"tok_depth@224": {3, 7}}, corrupt=corrupt)
    write_layout(root / "val", values["val"], "folders")
    return values


def _config(tmp_path: Path, **changes) -> Ml4mDataConfig:
    data = dict(root=tmp_path / "ml4m", out=tmp_path / "shards", mapping=MAPPING,
                text_tokenizer=write_vocabulary(tmp_path / "tokenizer.json"))
    data.update(changes)
    return Ml4mDataConfig(**data)


def test_tars_and_folders_become_shards_with_presence(tmp_path):
    values = _dataset(tmp_path / "ml4m")
    summary = import_ml4m_data(_config(tmp_path))
    assert summary["splits"] == {"train": 24, "val": 8}
    assert summary["modalities"] == {"caption": "caption", "det": "det", "depth": "tok_depth@224",
                                     "normal": "tok_normal@224", "rgb": "tok_rgb@224"}
    train = open_shards(tmp_path / "shards", "train")
    assert train.ids == [f"{row:06d}" for row in range(24)]
    assert train.present["depth"].tolist() == [row not in (3, 7) for row in range(24)]  # absent, not an error
    assert (train.tokens["depth"][3] == 0).all()
    for ml4m_name, name in (("tok_rgb@224", "rgb"), ("tok_normal@224", "normal")):
        expected = np.stack([crops[0] for crops in values["train"][ml4m_name]])  # crop 0 of (2, H*W)
        assert np.array_equal(train.tokens[name], expected.astype(np.int32))
    val = open_shards(tmp_path / "shards", "val")  # plain files: the key is the path under the folder
    assert val.ids == sorted(f"part{row % 2}/{row:06d}" for row in range(8)) and val.present["rgb"].all()
    order = [int(sample.split("/")[1]) for sample in val.ids]
    expected = np.stack([values["val"]["tok_depth@224"][row][0] for row in order])
    assert np.array_equal(val.tokens["depth"], expected)
    spec = train.specs["caption"]
    assert (spec.num_tokens, spec.vocab_size, spec.bos_id, spec.eos_id, spec.pad_id) == (12, 256, 5, 3, 0)
    tokenizers = read_manifest(tmp_path / "shards")["tokenizers"]
    captions = load_tokenizer(tokenizers, "caption").decode(train.tokens["caption"])
    assert captions == [text.lower() for text in values["train"]["caption"]]  # from .txt and .json lists
    boxes = load_tokenizer(tokenizers, "det").decode(train.tokens["det"][:1])
    assert boxes == [f"v0=1 v1=1 v2=4 v3=4 {values['train']['det'][0]['instances'][0]['class_name']}"]


def test_corrupt_member_is_named_or_skipped(tmp_path):
    _dataset(tmp_path / "ml4m", corrupt={"tok_normal@224": 5, "caption": 9})
    with pytest.raises(DataError, match=r"caption/shard-00001\.tar member 000009\.txt \(key '000009'\)"):
        import_ml4m_data(_config(tmp_path))  # the first bad member met: folders are read in name order
    assert not (tmp_path / "shards").exists()
    summary = import_ml4m_data(_config(tmp_path, on_bad_sample="skip"))
    assert summary["bad"] == 2
    train = open_shards(tmp_path / "shards", "train")
    assert not train.present["normal"][5] and train.present["rgb"][5]  # only that modality of the sample
    assert not train.present["caption"][9] and train.present["normal"][9]
    listed = read_manifest(tmp_path / "shards")["bad_samples"]["train"]
    assert [where.split("/train/")[1] for where, _ in listed] == [
        "caption/shard-00001.tar member 000009.txt (key '000009')",
        "tok_normal@224/shard-00000.tar member 000005.npy (key '000005')"]


def test_truncated_tar_names_the_shard(tmp_path):
    _dataset(tmp_path / "ml4m")
    shard = tmp_path / "ml4m" / "train" / "tok_rgb@224" / "shard-00001.tar"
    shard.write_bytes(shard.read_bytes()[:1500])  # cut inside the second member
    with pytest.raises(DataError, match=r"tok_rgb@224/shard-00001\.tar after member 000008\.npy"):
        import_ml4m_data(_config(tmp_path))
    import_ml4m_data(_config(tmp_path, on_bad_sample="skip"))
    train = open_shards(tmp_path / "shards", "train")
    assert train.present["rgb"].tolist() == [row <= 8 or row >= 16 for row in range(24)]  # 8 was read whole


def test_one_split_root_folder_names_and_webdataset(tmp_path):
    values = sample_values(10, GRIDS)
    values["rgb_dvae_BUa_224"] = values.pop("tok_rgb@224")  # as ml-4m's save_vq_tokens.py names folders
    write_layout(tmp_path / "ml4m", {key: values[key] for key in ("rgb_dvae_BUa_224", "caption")}, "tars",
                 shard_samples=4)
    with pytest.raises(FileNotFoundError, match="--folder FOLDER=MODALITY"):
        import_ml4m_data(_config(tmp_path, root=tmp_path / "ml4m" / "rgb_dvae_BUa_224"))
    config = _config(tmp_path, folders={"rgb_dvae_BUa_224": "tok_rgb@224"}, split="val", format="webdataset",
                     shard_samples=4)
    assert import_ml4m_data(config)["splits"] == {"val": 10}
    streamed = StreamedShards(tmp_path / "shards", "val")
    assert list(streamed.specs) == ["rgb", "caption"] and streamed.sizes == [4, 4, 2]
    tokens = streamed.read(1, ["rgb"])["rgb"]
    assert np.array_equal(tokens, np.stack([crops[0] for crops in values["rgb_dvae_BUa_224"][4:8]]))
    assert (tmp_path / "shards" / "tokenizers" / "caption" / "COMPLETE.json").is_file()
    assert not (tmp_path / "shards.packed").exists()
    with pytest.raises(ValueError, match="need ml-4m's WordPiece: pass --text-tokenizer"):
        import_ml4m_data(_config(tmp_path, text_tokenizer=None, out=tmp_path / "other",
                                 folders={"rgb_dvae_BUa_224": "tok_rgb@224"}))


def test_det_boxes_move_into_crop_zero(tmp_path):
    """With crop_settings and the raw images, boxes are moved into crop 0 as ml-4m does at load time."""
    from PIL import Image

    values = sample_values(2, {"tok_rgb@224": (4, 4, 64)})
    write_layout(tmp_path / "ml4m", {"tok_rgb@224": values["tok_rgb@224"], "det": values["det"]}, "folders")
    for row in range(2):
        for folder, name in (("crop_settings", f"{row:06d}.npy"), ("rgb", f"{row:06d}.png")):
            path = tmp_path / "ml4m" / folder / f"part{row}" / name
            path.parent.mkdir(parents=True)
            if folder == "crop_settings":  # (top, left, height, width, flip) per crop: the left half
                np.save(path, np.array([[0, 0, 100, 100, 0], [10, 10, 50, 50, 1]]))
            else:
                Image.new("RGB", (200, 100)).save(path)
    import_ml4m_data(_config(tmp_path, split="train"))
    data = open_shards(tmp_path / "shards", "train")
    det = load_tokenizer(tmp_path / "shards" / "tokenizers", "det").decode(data.tokens["det"])
    # x in [0.1, 0.5] of 200 px -> [20, 100] px -> [0.2, 1.0] of the 100 px crop -> bins 1, 7 of 8
    assert det[0] == f"v0=1 v1=1 v2=7 v3=4 {values['det'][0]['instances'][0]['class_name']}"


def test_import_audit_train_eval_on_imported_folder(tmp_path, capsys):
    """Acceptance: an imported ml-4m folder goes through audit (with a withheld pair), train and eval."""
    _dataset(tmp_path / "ml4m", train=32, val=16)
    vocabulary = write_vocabulary(tmp_path / "tokenizer.json")
    shards, run = tmp_path / "shards", tmp_path / "run"
    assert cli(["import-4m-data", str(tmp_path / "ml4m"), "--out", str(shards), "--modalities", str(MAPPING),
                "--text-tokenizer", str(vocabulary)]) == 0
    assert "train: 32 samples" in capsys.readouterr().out
    assert cli(["audit", "--shards", str(shards), "--withhold", "rgb:depth"]) == 0
    assert "withheld rgb:depth: co-occur in 0 samples (ok)" in capsys.readouterr().out
    settings = ["model.dim=32", "model.heads=2", "model.encoder_layers=1", "model.decoder_layers=1",
                "masking.input_budget=16", "masking.target_budget=16", "precision=fp32"]
    assert cli(["train", "--shards", str(shards), "--out", str(run), "--preset", "tiny", "--withhold",
                "rgb:depth", "--total-tokens", "1500", "--batch-size", "8",
                *(item for setting in settings for item in ("--set", setting))]) == 0
    assert cli(["eval", str(run), "--directions", "rgb:depth,rgb:caption,caption:det", "--num-samples",
                "8"]) == 0
    evaluated = read_json(run / "eval.json")
    assert all(np.isfinite(evaluated[key]["ce"]) and evaluated[key]["num_samples"] == 8
               for key in ("rgb:depth", "rgb:caption", "caption:det"))
    assert cli(["probe", str(run), "--pair", "rgb:depth", "--num-samples", "12"]) == 0
    # text decodes with the ml-4m WordPiece kept in the shards (image tokenizers are ml-4m's, not here)
    assert cli(["generate", str(run), "--from", "caption", "--to", "det", "--num", "4", "--out",
                str(tmp_path / "generated")]) == 0
    truth = (tmp_path / "generated" / "ground_truth" / "det.txt").read_text()
    assert truth.startswith("v0=1 v1=1 v2=4 v3=4 ")


def test_imported_checkpoint_evaluates_on_imported_data(tmp_path, capsys):
    """Acceptance: the ml-4m fixture model (pairless import-4m) evaluates on an imported ml-4m folder; the
    shards' TokenSpecs are the imported run's (eval refuses any difference)."""
    _dataset(tmp_path / "ml4m")
    shards, run = tmp_path / "shards", tmp_path / "fm7"
    assert cli(["import-4m-data", str(tmp_path / "ml4m"), "--out", str(shards), "--modalities", str(MAPPING),
                "--text-tokenizer", str(write_vocabulary(tmp_path / "tokenizer.json"))]) == 0
    assert cli(["import-4m", str(FIXTURE / "fm7.safetensors"), "--out", str(run), "--modalities",
                str(MAPPING), "--shards", str(shards)]) == 0
    capsys.readouterr()
    assert cli(["eval", str(run), "--directions", "rgb:depth,rgb+depth:caption,caption:det", "--num-samples",
                "8"]) == 0
    evaluated = read_json(run / "eval.json")
    assert {"rgb:depth", "rgb+depth:caption", "caption:det"} <= set(evaluated)
    assert all(np.isfinite(row["ce"]) for row in evaluated.values())
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["modalities_ml4m"]["rgb"] == "tok_rgb@224" and manifest["source"] == "ml-4m"


def test_unreadable_tar_listing_is_not_a_tarfile_crash(tmp_path):
    """A file that is no tar at all (not just a cut one) is named too."""
    _dataset(tmp_path / "ml4m", train=8)
    (tmp_path / "ml4m" / "train" / "det" / "shard-00000.tar").write_bytes(b"not a tar")
    assert not tarfile.is_tarfile(tmp_path / "ml4m" / "train" / "det" / "shard-00000.tar")
    with pytest.raises(DataError, match=r"det/shard-00000\.tar after its start: unreadable tar"):
        import_ml4m_data(_config(tmp_path))


def test_sample_keys_and_shard_order_follow_webdataset(tmp_path):
    from pairless.data.ml4m_layout import split_name, tar_shards

    assert split_name("a/b/000123.tok.npy") == ("a/b/000123", "tok.npy")
    assert split_name("000123.json.gz") == ("000123", "json.gz") and split_name("readme") == ("readme", "")
    for name in ("shard-10.tar", "shard-2.tar", "shard-1.tar", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in tar_shards(tmp_path)] == ["shard-1.tar", "shard-2.tar", "shard-10.tar"]
