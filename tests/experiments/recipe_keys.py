"""The cache keys of every recipe at every preset, for the check that a refactoring changes none of them.

``python tests/experiments/recipe_keys.py`` (from the repository root) rewrites
tests/fixtures/recipe_keys.json; it was first written from the code before issue 28 restructured the
experiments, and tests/experiments/test_recipe_keys.py compares today's keys with it. A key that changes
means a cached run, tokenizer set or evaluation would be recomputed (and its numbers could differ): a
change that means to do that rewrites the fixture in the same commit and says why.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "recipe_keys.json"
PRESETS = ("micro", "quick", "tiny", "paper")


def _world_recipe_keys(name: str, preset: str) -> dict:
    """Every cache folder and file name the runner derives for recipe ``name`` at ``preset``."""
    from pairless.experiments.recipes import get_recipe
    from pairless.experiments.runner import Plan

    config = get_recipe(name, preset)
    plan = Plan(config, Path("/nonexistent-out"))
    keys = {"world": plan.world_key, "tokenizers": plan.tokenizer_key,
            "runs": {run: folder.name for run, folder in plan.runs.items()},
            "evals": {run: plan.eval_file(run).name for run in plan.runs},
            "probes": {run: plan.probe_file(run).name for run in plan.runs},
            "regions": {run: plan.region_file(run).name for run in plan.runs}}
    pseudo = {run.name: plan.pseudo_shards(run).name for run in plan.expanded.values() if run.pseudo}
    if pseudo:
        keys["pseudo"] = pseudo
    snapshots = {run.name: [plan.eval_file(run.name, f"{fraction:g}").name for fraction in run.snapshots]
                 for run in plan.expanded.values() if run.snapshots}
    if snapshots:
        keys["snapshots"] = snapshots
    return keys


def _own_data_keys(preset: str, data: Path) -> dict:
    """own-data's keys that do not depend on where the folder lies: each run's resolved training config and
    the tokenizers' settings (the world key hashes the folder's path and file times)."""
    from pairless.experiments import stages
    from pairless.experiments.recipes import get_recipe
    from pairless.utils.storage import config_hash

    config = get_recipe("own-data", preset, data=str(data), withhold=[("rgb", "thermal")],
                        compare=[("rgb", "depth")])
    return {"tokenizers": config_hash(stages.tokenizer_key_fields(config.tokenizers)),
            "runs": {run.name: config_hash(stages.run_key_fields(run)) for run in config.expanded_runs()},
            "directions": list(config.directions), "unpaired": list(config.unpaired)}


def recipe_keys() -> dict:
    """{recipe: {preset: keys or {"error": message}}} for every recipe and preset."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from byod_helpers import write_user_folder

    from pairless.experiments.recipes import RECIPES

    out: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        data = write_user_folder(Path(scratch) / "data")
        for name in RECIPES:
            for preset in PRESETS:
                try:
                    keys = _own_data_keys(preset, data) if name == "own-data" else _world_recipe_keys(
                        name, preset)
                except Exception as error:  # noqa: BLE001 - a recipe that refuses a preset must keep refusing
                    keys = {"error": f"{type(error).__name__}: {error}"}
                out.setdefault(name, {})[preset] = keys
    return out


def main(argv: list[str] | None = None) -> int:
    keys = recipe_keys()
    FIXTURE.write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE} ({sum(len(p) for p in keys.values())} recipe x preset entries)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    raise SystemExit(main(sys.argv[1:]))
