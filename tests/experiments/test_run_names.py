"""Seed copies of a run are named in one place (experiment.seeded_name / seedless_name) and every reader
of the names (the expanded runs and adapters, the runner's cache folders, the report's groups) agrees."""

from __future__ import annotations

from pathlib import Path

from pairless.experiments.experiment import seeded_name, seedless_name
from pairless.experiments.recipes import get_recipe
from pairless.experiments.runner import Plan


def test_a_seed_copy_names_its_run():
    assert seeded_name("zs-rgb-depth", 0) == "zs-rgb-depth"
    assert seeded_name("zs-rgb-depth", 2) == "zs-rgb-depth@s2"
    for seed in range(3):
        assert seedless_name(seeded_name("pp-control", seed)) == "pp-control"


def test_expanded_runs_adapters_and_cache_folders_use_the_names():
    config = get_recipe("adapter", "micro").model_copy(update={"seeds": 2})
    names = [run.name for run in config.expanded_runs()]
    assert names == ["base-no-normal", "base-no-normal@s1", "many-shot", "many-shot@s1"]
    adapters = config.expanded_adapters()
    assert [(stage.name, stage.base) for stage in adapters][:2] == [
        ("adapter", "base-no-normal"), ("adapter@s1", "base-no-normal@s1")]
    plan = Plan(config, Path("/nonexistent-out"))
    for name, folder in plan.runs.items():
        assert folder.name.startswith(f"{seedless_name(name)}-") and "@" not in folder.name
    transitive = get_recipe("transitive", "micro").model_copy(update={"seeds": 2})
    continued = {run.name: run.init_from for run in transitive.expanded_runs() if run.init_from}
    assert continued["pp-control@s1"] == seeded_name(continued["pp-control"], 1)
