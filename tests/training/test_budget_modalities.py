"""budget_modalities: runs over different universes see the counted modalities' tokens equally often."""

from __future__ import annotations

import json

import pytest
from train_helpers import make_shards, tiny_config_data

from pairless.config import ConfigError, validate
from pairless.training.config import TrainConfig
from pairless.training.train import train

BATCH, BUDGET = 16, 24  # tiny_config_data: 12 input + 12 target tokens per sample


def _counted(run, names):
    summary = json.loads((run / "COMPLETE.json").read_text())
    return sum(summary["tokens_per_modality"].get(name, 0) for name in names), summary


def test_exposure_matched_runs_see_the_counted_modalities_equally(tmp_path):
    shards = make_shards(tmp_path / "shards", count=48)
    total = BATCH * BUDGET * 6
    counted = {}
    for universe in (["rgb", "depth"], ["rgb", "depth", "normal", "caption"]):
        out = tmp_path / "+".join(universe)
        config = validate(TrainConfig, tiny_config_data(
            shards, out, total_tokens=total, budget_modalities=["rgb", "depth"],
            fragment={"withheld": [["rgb", "depth"]], "universe": universe}))
        train(config)
        counted[len(universe)], summary = _counted(out, ["rgb", "depth"])
        # the budget is reached, overshooting by less than one global batch's tokens
        assert total <= counted[len(universe)] < total + BATCH * BUDGET
    # with the default budget the four-modality run would have seen rgb and depth far less often
    plain = tmp_path / "plain"
    train(validate(TrainConfig, tiny_config_data(
        shards, plain, total_tokens=total,
        fragment={"withheld": [["rgb", "depth"]], "universe": ["rgb", "depth", "normal", "caption"]})))
    seen_plain, _ = _counted(plain, ["rgb", "depth"])
    assert seen_plain < 0.8 * total
    assert abs(counted[2] - counted[4]) < BATCH * BUDGET


def test_budget_modality_outside_the_universe_is_named(tmp_path):
    shards = make_shards(tmp_path / "shards", count=32)
    config = validate(TrainConfig, tiny_config_data(
        shards, tmp_path / "run", budget_modalities=["normal"],
        fragment={"withheld": [["rgb", "depth"]], "universe": ["rgb", "depth"]}))
    with pytest.raises(ConfigError, match="budget_modalities: normal"):
        train(config)
