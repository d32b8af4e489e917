"""results.json has a schema (:class:`pairless.experiments.results.Results`): every committed one validates
and is written back unchanged; a file with a bad entry is refused naming the entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pairless.config import ConfigError
from pairless.experiments.results import read_results, validate_results
from pairless.modalities import Direction, Pair

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"
COMMITTED = sorted(path.parent.name for path in RESULTS.glob("*/results.json"))


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_results_validate_and_round_trip(name):
    path = RESULTS / name / "results.json"
    results = read_results(path)
    assert results.to_json() == json.loads(path.read_text())
    for run in results.runs.values():  # withheld pairs are typed, still equal to plain tuples
        assert all(isinstance(pair, Pair) for pair in run.withheld)


def test_committed_results_were_found():
    assert len(COMMITTED) >= 10 and "demo" in COMMITTED


def test_a_bad_entry_is_named():
    data = json.loads((RESULTS / "demo" / "results.json").read_text())
    data["evals"]["many-shot"]["rgb:depth"]["ce"] = "low"
    with pytest.raises(ConfigError, match=r"results\.evals\.many-shot\.rgb:depth\.ce"):
        validate_results(data, "demo/results.json")
    data = json.loads((RESULTS / "demo" / "results.json").read_text())
    data["evals"]["many-shot"]["rgb-depth"] = data["evals"]["many-shot"].pop("rgb:depth")
    with pytest.raises(ConfigError, match="rgb-depth"):
        validate_results(data)


def test_pair_and_direction_text_forms():
    assert Pair.parse("rgb:depth") == ("rgb", "depth") == Pair.parse(["rgb", "depth"])
    assert str(Pair("rgb", "depth")) == "rgb:depth"
    direction = Direction.parse("rgb+normal:depth")
    assert direction.sources == ("rgb", "normal") and direction.destination == "depth"
    assert str(direction) == "rgb+normal:depth"
    with pytest.raises(ValueError, match="expected A:B"):
        Pair.parse("rgb+normal:depth")


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_configs_load_as_experiment_configs(name):
    """A results.json written before runs held their TrainConfig under ``train`` (flat fields) still loads
    as an ExperimentConfig (plan_estimate, --reference and the report read old files)."""
    from pairless.experiments.experiment import ExperimentConfig

    recorded = json.loads((RESULTS / name / "results.json").read_text())["config"]
    config = ExperimentConfig.model_validate(recorded)
    assert config.runs and all(run.config().total_tokens >= 1 for run in config.runs)


def test_a_flat_run_nests_as_the_runner_built_it():
    from pairless.experiments.experiment import TrainingRun

    run = TrainingRun.model_validate({
        "name": "zs", "role": "zero-shot", "model_preset": "small", "withheld": [["rgb", "depth"]],
        "universe": None, "total_tokens": 3_000_000, "batch_size": 16, "input_budget": 48,
        "target_budget": 80, "seed": 2, "allow_pairs": {"rgb:depth": 5}, "only_paired": False,
        "snapshots": [0.5],
        "overrides": ["base_lr=0.002", "masking.alphas=[0.5]"]})
    config = run.config()
    assert (config.total_tokens, config.batch_size, config.seed) == (3_000_000, 16, 2)
    assert config.model.preset == "small"
    assert (config.masking.input_budget, config.masking.target_budget) == (48, 80)
    assert [tuple(pair) for pair in config.fragment.withheld] == [("rgb", "depth")]
    assert (config.fragment.seed, dict(config.fragment.allow_pairs)) == (2, {"rgb:depth": 5})
    assert list(config.snapshots) == [0.5]
    assert config.base_lr == 0.002 and list(config.masking.alphas) == [0.5]
