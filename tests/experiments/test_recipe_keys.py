"""Every recipe at every preset keeps its cache keys (issue 28): the world, tokenizer, run, adapter,
pseudo-pair, evaluation, probe and region keys the runner derives equal those recorded from the code before
the experiments were restructured (tests/fixtures/recipe_keys.json, written by recipe_keys.py beside this
file), so no cached run is trained again and no committed result changes."""

from __future__ import annotations

import json

from recipe_keys import FIXTURE, recipe_keys


def test_every_recipe_and_preset_hashes_as_recorded():
    expected = json.loads(FIXTURE.read_text())
    found = recipe_keys()
    assert sorted(found) == sorted(expected), "a recipe was added or removed: rewrite the fixture"
    changed = [f"{name}@{preset}" for name in expected for preset in expected[name]
               if found[name].get(preset) != expected[name][preset]]
    assert not changed, f"cache keys changed for {', '.join(changed)}"
