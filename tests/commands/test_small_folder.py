"""A researcher's small folder through ``pairless run own-data``: a batch larger than the folder is clipped
to what it holds and the run says so; what cannot work (no train or val folder, no sample) is refused in
one message naming the folder, the count and what to change; never a traceback."""

from __future__ import annotations

import shutil

import pytest
from byod_helpers import write_user_folder

from pairless import modalities as registry
from pairless.cli import main as cli_main
from pairless.utils.storage import read_json


@pytest.fixture(autouse=True)
def forget_thermal():
    yield
    registry.unregister("thermal")


def test_eight_samples_train_with_the_batch_clipped_and_say_so(tmp_path, capsys):
    data = write_user_folder(tmp_path / "data", train=8, val=4)
    assert cli_main(["run", "own-data", "--data", str(data), "--preset", "micro",
                     "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    note = f"batch 16 of preset micro is more than the 8 training samples in {data}/train"
    assert f"note: {note}: each run trains with batch 8" in captured.out and "Traceback" not in captured.err
    # the tokenizers draw what each modality has (4 depth files) and say so
    clipped = "tokenizer depth: 4 training samples, fewer than the batch of 16: each step uses all 4"
    assert clipped in captured.err
    results = read_json(tmp_path / "out" / "own-data" / "results.json")
    assert results["config"]["runs"][0]["train"]["batch_size"] == 8
    assert read_json(f"{results['runs']['all-data']['path']}/config.json")["batch_size"] == 8
    assert results["evals"]["all-data"]["rgb:depth"]["num_samples"] == 2
    report = (tmp_path / "out" / "own-data" / "report.md").read_text()
    assert f"**Note**: Batch 16 of preset micro is more than the 8 training samples in {data}/train" in report
    # probes on 2 held-out pairs: skipped with the count and what the probes need, not a cut-off cell
    skipped = "only 2 samples of the 'val' split have both 'rgb' and 'depth'; the probes need more than 3"
    assert skipped in report


def test_three_samples_run_and_the_report_says_nothing_could_be_evaluated(tmp_path, capsys):
    data = write_user_folder(tmp_path / "data", train=3, val=2)
    assert cli_main(["run", "own-data", "--data", str(data), "--preset", "micro",
                     "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "each run trains with batch 3" in captured.out and "Traceback" not in captured.err
    results = read_json(tmp_path / "out" / "own-data" / "results.json")
    assert results["config"]["directions"] == [] and results["evals"]["all-data"] == {}
    report = (tmp_path / "out" / "own-data" / "report.md").read_text()
    assert (f"**Note**: No direction is evaluated: no two modalities have 2 or more samples with both in "
            f"{data}/val (2 held-out samples)") in report
    assert "**no verdict**: 1 held-out samples, fewer than the 16 a verdict needs" in report


def test_budgets_larger_than_the_tokens_a_sample_holds_are_fitted_and_said(tmp_path, capsys):
    """32x32 rgb (64 tokens) and short captions hold fewer tokens per sample than micro's 48 + 48."""
    import numpy as np
    from PIL import Image

    data, rng = tmp_path / "data", np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 3)):
        for folder in ("rgb", "caption"):
            (data / split / folder).mkdir(parents=True)
        for index in range(count):
            image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(image).save(data / split / "rgb" / f"{index:04d}.png")
            (data / split / "caption" / f"{index:04d}.txt").write_text("a red cube.")
    command = ["run", "own-data", "--data", str(data), "--preset", "micro", "--out", str(tmp_path / "out")]
    # the plan, before any tokenizer exists: the budgets the run will use, from the folder as its tokenizers
    # will read it; planned for this CPU, whose runs the command then trains (a GPU plan keys its runs for
    # the GPU's attention kernel, so it names other folders)
    assert cli_main([*command, "--dry-run"]) == 0
    planned = capsys.readouterr().out
    assert f"token specs: from {data}/train, read as the tokenizers will: images 32x32" in planned
    assert cli_main(command) == 0
    captured = capsys.readouterr()
    results = read_json(tmp_path / "out" / "own-data" / "results.json")
    masking = read_json(f"{results['runs']['all-data']['path']}/config.json")["masking"]
    held = read_json(f"{results['paths']['shards']}/manifest.json")["modalities"]
    total = sum(spec["num_tokens"] for spec in held.values())
    assert masking["input_budget"] + masking["target_budget"] == total < 96
    note = (f"budgets 48 + 48 tokens of preset micro are more than the {total} tokens rgb, caption hold per "
            f"sample: each run masks {masking['input_budget']} + {masking['target_budget']}")
    assert note in captured.out and "Traceback" not in captured.err
    assert captured.out.count(note) == 1  # planned right: not said again once the shards exist
    assert note[1:] in (tmp_path / "out" / "own-data" / "report.md").read_text()
    # the dry-run planned those budgets and that run folder (its key hashes the budgets)
    assert note in planned and f"({total} per sample," in planned
    assert results["runs"]["all-data"]["path"] in planned
    # planned again with the shards cached: the same, now from the shards
    assert cli_main([*command, "--dry-run"]) == 0
    cached = capsys.readouterr().out
    assert f"token specs: from {results['paths']['shards']}" in cached and note in cached
    assert results["runs"]["all-data"]["path"] in cached


@pytest.mark.parametrize(("damage", "expected"), [
    ("no-val", "has no val/ folder; the recipe needs val/ with the held-out samples"),
    ("no-train", "has no train/ folder; the recipe needs train/ with the samples the models train on"),
    ("empty-train", "/train holds no sample (no file that a known or declared modality takes"),
])
def test_a_folder_it_cannot_run_on_is_refused_in_one_message(tmp_path, capsys, damage, expected):
    data = write_user_folder(tmp_path / "data", train=3, val=2)
    if damage == "no-val":
        shutil.rmtree(data / "val")
    else:
        shutil.rmtree(data / "train")
        if damage == "empty-train":
            (data / "train" / "rgb").mkdir(parents=True)
    assert cli_main(["run", "own-data", "--data", str(data), "--preset", "micro",
                     "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert f"own-data: {data}" in error and expected in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()
