"""A user's own folder through every command (issue 29): a declared 1-channel ``thermal`` png never recorded
with depth, nested ``train/rgb/part0/...``; one micro own-data run, then each command on its outputs."""

from __future__ import annotations

import pytest
from byod_helpers import write_user_folder

from pairless import modalities as registry
from pairless.cli import main as cli_main
from pairless.utils.storage import read_json


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    data = write_user_folder(root / "data")
    (data / "train" / "rgb" / "part0" / "000003.png").write_bytes(b"not a png")  # a bad file, skipped
    try:
        assert cli_main(["run", "own-data", "--data", str(data), "--preset", "micro",
                         "--out", str(root / "results")]) == 0
        results = read_json(root / "results" / "own-data" / "results.json")
        yield root, results
    finally:
        registry.unregister("thermal")


def forget_thermal() -> None:
    """The next command starts as a fresh process would: 'thermal' unknown until it reads a declaration."""
    registry.unregister("thermal")


def test_every_command_knows_the_declared_modality_without_a_flag(own_run, capsys):
    root, results = own_run
    run = results["runs"]["all-data"]["path"]
    assert (root / "results" / "cache" / "runs").is_dir() and read_json(f"{run}/modalities.json")
    forget_thermal()
    assert cli_main(["generate", run, "--from", "rgb", "--to", "thermal", "--num", "2",
                     "--out", str(root / "gen")]) == 0  # a 1-channel png written and drawn
    assert (root / "gen" / "figure.png").is_file() and (root / "gen").glob("thermal_0.png")
    forget_thermal()
    assert cli_main(["eval", run, "--directions", "rgb:thermal", "--num-samples", "4"]) == 0
    assert "rgb:thermal" in capsys.readouterr().out
    forget_thermal()
    assert cli_main(["report", str(root / "results" / "own-data")]) == 0
    forget_thermal()
    from pairless.inference.catalogue import discover

    discover([root / "results"])
    assert "thermal" in registry.names()


def test_eval_scores_what_it_can_and_names_the_split_of_what_it_skips(own_run, capsys):
    root, results = own_run
    run = results["runs"]["all-data"]["path"]
    assert cli_main(["eval", run, "--directions", "thermal:depth,rgb:depth", "--num-samples", "4"]) == 0
    captured = capsys.readouterr()
    assert "rgb:depth" in captured.out
    skipped = "thermal:depth: skipped, no sample of the 'val' split has all of ['thermal', 'depth']"
    assert skipped in captured.err
    assert cli_main(["eval", run, "--directions", "thermal:depth,rgb:depth", "--strict"]) == 1
    assert cli_main(["eval", run, "--directions", "thermal:depth"]) == 2
    assert "no direction could be evaluated" in capsys.readouterr().err


def test_generate_translates_a_pair_no_sample_holds_and_scores_nothing(own_run, capsys):
    root, results = own_run
    run = results["runs"]["all-data"]["path"]
    out = root / "thermal-to-depth"
    assert cli_main(["generate", run, "--from", "thermal", "--to", "depth", "--num", "2",
                     "--out", str(out)]) == 0
    assert "no ground truth, nothing scored" in capsys.readouterr().err
    metrics = read_json(out / "metrics.json")
    assert metrics["_num_samples"] == 2 and metrics[run.rsplit("/", 1)[1]] == {}
    assert (out / "figure.png").is_file() and not (out / "ground_truth").exists()


def test_tokenizers_train_refuses_a_nan_in_val_before_training_anything(tmp_path, capsys):
    data = write_user_folder(tmp_path / "data", train=8, val=4, nan_in_val=True)
    try:
        assert cli_main(["tokenizers", "train", "--data", str(data), "--out", str(tmp_path / "tok"),
                         "--preset", "micro"]) == 1
    finally:
        forget_thermal()
    assert "val/depth/part0/000000.npy: contains NaN or inf" in capsys.readouterr().err
    assert not (tmp_path / "tok").exists() or not any((tmp_path / "tok").iterdir())  # nothing trained


def test_paths_are_read_from_the_current_directory_wherever_the_run_was_made(own_run, tmp_path,
                                                                               monkeypatch, capsys):
    from pairless.commands.train import build_parser, config_from_args
    from pairless.inference.evaluate import run_shards_path

    root, results = own_run
    shards = root / "results" / "cache" / results["paths"]["shards"].rsplit("/", 1)[1]
    monkeypatch.chdir(root)
    args = build_parser().parse_args(["--shards", shards.relative_to(root).as_posix(), "--out", "runs/mine",
                                      "--preset", "tiny"])
    config = config_from_args(args)
    assert str(config.shards) == str(shards) and str(config.out) == str(root / "runs" / "mine")
    # a run recorded before paths were made absolute: its relative shards are found from a folder above it
    old_run = root / "results" / "old-run"
    old_run.mkdir()
    (old_run / "config.json").write_text(f'{{"shards": "results/cache/{shards.name}"}}')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run_shards_path(old_run) == root / "results" / "cache" / shards.name
    # a relative --shards is read from the current directory, not from the run folder
    run = results["runs"]["all-data"]["path"]
    relative = "../" * len(elsewhere.parts) + shards.as_posix().lstrip("/")
    assert cli_main(["eval", run, "--directions", "rgb:depth", "--num-samples", "2",
                     "--shards", relative]) == 0
    assert "rgb:depth" in capsys.readouterr().out


def test_the_report_scores_the_declared_modality_and_gives_no_verdict_it_cannot_back(own_run):
    root, results = own_run
    report = (root / "results" / "own-data" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| rgb → thermal | all-data |"))
    # a declared 8-bit image: PSNR, beside no input's and the tokenizer's ceiling; the samples stated
    assert "| 4 |" in row and "psnr (higher is better)" in row and "| – |" not in row
    assert "psnr" in results["tokenizer_ceiling"]["thermal"]
    assert "_no_input" in results["generation"]["metrics"]["rgb:thermal"]
    # 4 held-out samples and nothing learned at micro: no verdict of the unpaired section may stand
    assert "uses its input" not in report and "survives the trip" not in report
    assert "**no verdict**: 4 held-out samples, fewer than the 16 a verdict needs" in report
    assert not (root / "results" / "own-data" / "probes.png").exists()  # too few points to plot


def test_your_data_counts_what_was_used_and_a_second_folder_into_the_same_out_is_refused(own_run, capsys):
    root, _ = own_run
    report = (root / "results" / "own-data" / "report.md").read_text()
    assert "**train**: 48 samples used (48 in the listing; bad files skipped: rgb 1)" in report
    assert "| rgb | 24 | 47 | 23 |" in report  # 48 rgb files, one skipped
    other = write_user_folder(root / "other", train=8, val=4)
    try:
        assert cli_main(["run", "own-data", "--data", str(other), "--preset", "micro",
                         "--out", str(root / "results")]) == 1
    finally:
        forget_thermal()
    assert f"holds the report of {root / 'data'}; this run is on {other}" in capsys.readouterr().err
    assert str(root / "data") in (root / "results" / "own-data" / "report.md").read_text()  # kept


def test_no_lock_is_left_behind(own_run):
    """After the recipe and every command above (in this module, the fixture's folder is shared)."""
    root, _ = own_run
    assert sorted(path.relative_to(root) for path in root.rglob("*.lock")) == []


def test_a_moved_project_still_finds_its_shards_and_tokenizers(own_run, tmp_path, monkeypatch, capsys):
    """The results tree moved whole (the recorded absolute paths now point nowhere): eval, generate and
    report find the shards and tokenizers beside the run, from any directory."""
    import shutil

    root, results = own_run
    moved = tmp_path / "moved" / "results"
    shutil.copytree(root / "results", moved)
    away = root / "results-away"
    (root / "results").rename(away)  # the old location is gone while the moved copy is used
    try:
        run = moved / "cache" / "runs" / results["runs"]["all-data"]["path"].rsplit("/", 1)[1]
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        forget_thermal()
        assert cli_main(["eval", str(run), "--directions", "rgb:depth", "--num-samples", "2"]) == 0
        assert "rgb:depth" in capsys.readouterr().out
        forget_thermal()
        assert cli_main(["generate", str(run), "--from", "rgb", "--to", "thermal", "--num", "2",
                         "--out", "gen"]) == 0
        assert (elsewhere / "gen" / "figure.png").is_file()
        forget_thermal()
        assert cli_main(["report", str(moved / "own-data")]) == 0
    finally:
        away.rename(root / "results")


def test_the_plan_reads_the_token_specs_the_tokenizers_made(own_run):
    """``--dry-run``'s specs of the folder (one image for the size, every text through the vocabulary)
    are the ones the tokenizers gave the shards: nested folders, a declared 1-channel png, a bad file."""
    from pairless.data.declared import declare_from
    from pairless.data.shards import read_manifest, specs_from_manifest
    from pairless.experiments.folder_specs import folder_specs
    from pairless.tokenizers.neural_training import preset_config

    root, results = own_run
    declare_from(root / "data")  # as the plan does (an earlier test may have forgotten 'thermal')
    shards = root / "results" / "cache" / results["paths"]["shards"].rsplit("/", 1)[1]
    made = specs_from_manifest(read_manifest(shards), shards / "manifest.json")
    specs, source = folder_specs(root / "data", preset_config("micro"), list(made))
    assert specs == made
    assert source.startswith(f"from {root / 'data'}/train, read as the tokenizers will: images 32x32 (as ")
