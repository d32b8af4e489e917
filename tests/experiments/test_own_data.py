"""The own-data recipe beyond the docs example: simulated withholding, errors, the report's verdicts."""

from __future__ import annotations

import pytest
from byod_helpers import byod_blocks

from pairless import modalities as registry
from pairless.commands.run import main as run_main
from pairless.config import ConfigError
from pairless.experiments import folder_specs
from pairless.experiments.recipes import get_recipe
from pairless.experiments.report.quality import compare
from pairless.experiments.report.unpaired import unpaired_lines
from pairless.utils.storage import read_json


@pytest.fixture
def my_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(byod_blocks()[0], {})  # my_data/ with rgb, depth, caption and a declared thermal
    yield tmp_path / "my_data"
    registry.unregister("thermal")


def test_withhold_simulates_a_never_recorded_pair_that_still_has_ground_truth(my_data, tmp_path):
    assert run_main(["own-data", "--data", str(my_data), "--preset", "micro", "--withhold", "rgb:caption",
                     "--out", str(tmp_path / "out")]) == 0
    results = read_json(tmp_path / "out" / "own-data" / "results.json")
    config = results["config"]
    assert config["unpaired"] == ["depth:thermal", "rgb:caption"]
    assert config["runs"][0]["train"]["fragment"]["withheld"] == [["rgb", "caption"]]
    # a bridge is seen with both ends in training (the withheld pair does not count as seen)
    assert config["bridges"] == {"depth:thermal": ["rgb", "caption"], "rgb:caption": ["depth", "thermal"]}
    assert "rgb:caption" in config["directions"]  # val has ground truth for it: evaluated for real
    report = (tmp_path / "out" / "own-data" / "report.md").read_text()
    assert "### rgb → caption" in report and "a true zero-shot measurement" in report
    assert "rgb:caption" in results["evals"]["all-data"]


def test_dry_run_plans_on_the_folder(my_data, tmp_path, capsys, monkeypatch):
    reads = []
    original = folder_specs.folder_specs
    monkeypatch.setattr(folder_specs, "folder_specs", lambda *args: reads.append(args) or original(*args))
    assert run_main(["own-data", "--data", str(my_data), "--preset", "quick", "--compare", "rgb:depth",
                     "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "data (your folder)" in printed and str(my_data) in printed
    assert "train all-data (many-shot)" in printed and "train zs-rgb-depth (zero-shot)" in printed
    assert not (tmp_path / "out").exists()  # a plan writes nothing
    assert len(reads) == 1  # the folder is read once, for the budgets and the plan's rows alike


def test_bad_options_are_refused_with_the_reason(my_data):
    with pytest.raises(ConfigError, match="--data DIR is required"):
        get_recipe("own-data", "micro")
    with pytest.raises(ConfigError, match=r"--compare depth:thermal: needs samples with both in train"):
        get_recipe("own-data", "micro", data=str(my_data), compare=[("depth", "thermal")])
    with pytest.raises(ConfigError, match=r"--withhold rgb:lidar: 'lidar' is not in"):
        get_recipe("own-data", "micro", data=str(my_data), withhold=[("rgb", "lidar")])
    with pytest.raises(ConfigError, match=r"--data: only for own-data"):
        get_recipe("demo", "micro", data=str(my_data))


def test_verdicts_treat_small_differences_as_none():
    assert compare(0.50, 0.80, "lower") == "better" and compare(0.79, 0.80, "lower") == "tie"
    assert compare(0.90, 0.80, "higher") == "better" and compare(0.70, 0.80, "higher") == "worse"
    entry = {"run": "all-data", "num_samples": 32,
             "bridges": {"rgb": {"num_samples": 32, "direct": {"abs_rel": 0.10}, "chained": {"abs_rel": 0.1},
                                 "no_input": {"abs_rel": 0.30}}},
             "cycle": {"metrics": {"rmse": 3.00}, "shuffled": {"rmse": 3.01}}}
    learned = {("rgb:depth", "all-data"): {"learned": True, "reason": None, "ratio": 0.5}}
    lines = unpaired_lines("thermal:depth", entry, learned)
    assert "rests on rgb → depth, the proxy; 32 samples" in lines[0] and "uses its input" in lines[0]
    assert "**no closer to the real thermal than to another sample's**" in lines[1]


def test_unpaired_verdicts_refuse_to_rest_on_an_unlearned_direction_or_few_samples():
    entry = {"run": "all-data", "num_samples": 4,
             "bridges": {"rgb": {"num_samples": 32, "direct": {"abs_rel": 0.10}, "chained": {"abs_rel": 0.1},
                                 "no_input": {"abs_rel": 0.30}}},
             "cycle": {"metrics": {"rmse": 2.00}, "shuffled": {"rmse": 3.00}}}
    unlearned = {("rgb:depth", "all-data"): {"learned": False, "reason": "worse than no input",
                                             "ratio": 1.06}}
    lines = unpaired_lines("thermal:depth", entry, unlearned)
    assert "**no verdict**: it rests on rgb → depth, which the run has not learned (worse than no input)" \
        in lines[0]
    assert "**no verdict**: 4 held-out samples, fewer than the 16 a verdict needs" in lines[1]
    assert "**no verdict**: it rests on rgb → depth, which has no measured quality" in \
        unpaired_lines("thermal:depth", entry)[0]
