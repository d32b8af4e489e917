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
