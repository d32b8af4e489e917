"""End to end: `pairless probe` on a micro trained run writes RUN/probes.json, merges pairs and names bad
values."""

from __future__ import annotations

import json

import pytest
from train_helpers import make_shards, tiny_config_data

from pairless.cli import main as cli_main
from pairless.commands.probe import main
from pairless.config import validate
from pairless.inference.probes import METRICS
from pairless.training.config import TrainConfig
from pairless.training.train import train
from pairless.utils.storage import verify_complete

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    shards = make_shards(root / "shards")  # 16 val samples
    out = root / "run"
    # trained without caption, so that probing it is a modality the run was not trained on
    train(validate(TrainConfig, tiny_config_data(shards, out, fragment=dict(
        universe=["rgb", "depth", "normal"], withheld=[["rgb", "depth"]]))))
    return out


def test_probe_writes_merges_and_prints_a_table(run, capsys):
    assert main([str(run), "--pair", "rgb:depth", "--num-samples", "1000", "--batch-size", "8"]) == 0
    printed = capsys.readouterr().out
    assert "rgb:depth: 16 samples" in printed and "recall@1" in printed and "shuffled" in printed
    assert "1 (output)" in printed  # one encoder layer: rows 0 (input) and 1 (output)
    first = json.loads((run / "probes.json").read_text())
    result = first["rgb:depth"]
    assert result["num_samples"] == 16 and result["split"] == "val"
    assert [row["layer"] for row in result["layers"]] == [0, 1]
    assert set(result["summary"]) == {"layer", *METRICS} and result["summary"]["layer"] == 1
    for metric in METRICS:
        assert 0.0 <= result["summary"][metric] <= 1.0
    assert cli_main(["probe", str(run), "--pair", "depth:normal", "--num-samples", "12"]) == 0
    merged = json.loads((run / "probes.json").read_text())
    assert set(merged) == {"rgb:depth", "depth:normal"} and merged["rgb:depth"] == result
    assert merged["depth:normal"]["num_samples"] == 12
    verify_complete(run)  # probes.json is a result about the run, outside its content hash


@pytest.mark.parametrize("pair,message", [
    ("rgb:nosuch", "unknown modality 'nosuch'"),
    ("rgb:caption", "'caption': the run was not trained on it; it was trained on rgb, depth, normal"),
    ("rgb-depth", "pair 'rgb-depth': expected A:B"),
])
def test_bad_pairs_are_named(run, capsys, pair, message):
    assert main([str(run), "--pair", pair]) == 2
    assert message in capsys.readouterr().err


def test_too_few_samples_are_named(run, capsys):
    assert main([str(run), "--pair", "rgb:normal", "--num-samples", "5"]) == 2
    assert "pair rgb:normal: num_samples = 5; the probes need more than 10" in capsys.readouterr().err
