"""The tokenizer and adapter stages of a recipe hold typed settings (nested data validated against the
component's own config), not ``--set`` text: they resolve to what the text resolved to, older results.json
files with ``overrides`` still load, and every adapter keeps the cache key it had as text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pairless.config import apply_overrides
from pairless.experiments import stages
from pairless.experiments.experiment import AdapterStage, ExperimentConfig, TokenizerStage
from pairless.experiments.recipes import get_recipe
from pairless.tokenizers.neural_training import preset_config
from pairless.utils.storage import config_hash

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results"


@pytest.mark.parametrize("overrides", [
    ["steps=8"],
    ["spatial.modality_levels={}"],
    ['spatial.modality_levels={"semseg":[4,4,4]}', "spatial.width=64", "modality_steps.rgb=3000"],
    ["normalization.depth=standard", "text.truncate=true", "threads=1"],
])
def test_tokenizer_settings_resolve_as_the_override_text_did(overrides):
    from pairless.config import overrides_as_data

    stage = TokenizerStage(preset="micro", seed=3, settings=overrides_as_data(overrides))
    assert stage.config() == apply_overrides(preset_config("micro", seed=3), overrides)


def test_a_bad_tokenizer_setting_names_the_field():
    with pytest.raises(ValueError, match=r"tokenizers\.settings\.spatial\.width"):
        TokenizerStage(settings={"spatial": {"width": "wide"}})
    with pytest.raises(ValueError, match=r"tokenizers\.settings\.stepz"):
        TokenizerStage(settings={"stepz": 3})


def test_the_run_command_sets_a_tokenizer_setting():
    config = apply_overrides(get_recipe("demo", "micro"), ["tokenizers.settings.steps=8"])
    assert config.tokenizers.settings == {"steps": 8} and config.tokenizers.config().steps == 8


def test_older_results_with_override_text_load_as_settings():
    recorded = json.loads((RESULTS / "adapter-tiny" / "results.json").read_text())["config"]
    config = ExperimentConfig.model_validate(recorded)
    assert config.tokenizers.settings == {}
    assert [stage.settings for stage in config.adapters] == [{"batch_size": 32}, {"batch_size": 32}]
    assert config.adapters == get_recipe("adapter", "tiny").adapters
    stage = TokenizerStage.model_validate({"preset": "micro", "overrides": ["steps=8", "spatial.width=24"]})
    assert stage.settings == {"steps": 8, "spatial": {"width": 24}}


def test_adapter_settings_are_its_config_fields_and_never_its_own():
    stage = AdapterStage(name="a", base="b", modality="normal", anchor="rgb", total_tokens=5000,
                         settings={"batch_size": 8, "masking": {"input_budget": 16}})
    config = stage.config(Path("base"), Path("shards"), Path("out"))
    assert (config.batch_size, config.masking.input_budget, config.total_tokens) == (8, 16, 5000)
    assert config.base == Path("base") and config.out == Path("out")
    for own in ("total_tokens", "modality", "out"):
        with pytest.raises(ValueError, match=f"settings: {own}"):
            AdapterStage(name="a", base="b", modality="normal", anchor="rgb", settings={own: 1})
    with pytest.raises(ValueError, match=r"adapters\.a\.settings\.lr"):
        AdapterStage(name="a", base="b", modality="normal", anchor="rgb", settings={"lr": -1})


def _key_as_text(stage: AdapterStage, overrides: list[str]) -> str:
    """An adapter's key as the runner computed it when the stage held ``overrides`` as text."""
    return config_hash({**stage.model_dump(mode="json", exclude={"name", "label", "base", "settings"}),
                        "overrides": overrides})


def test_every_seed_of_an_adapter_keeps_its_key_from_the_text_form():
    config = get_recipe("adapter", "micro").model_copy(update={"seeds": 3})
    expanded = config.expanded_adapters()
    assert [stage.name for stage in expanded][:3] == ["adapter", "adapter@s1", "adapter@s2"]
    for stage in expanded:
        seed = int(stage.name.split("@s")[1]) if "@s" in stage.name else 0
        assert stage.config().seed == seed
        expected = _key_as_text(stage, ["batch_size=16", f"seed={seed}"])
        assert config_hash(stages.adapter_key_fields(stage)) == expected
    nested = AdapterStage(name="a", base="b", modality="normal", anchor="rgb", settings={
        "seed": 2, "masking": {"input_budget": 16}, "precision": "fp32", "lr": 0.001})
    assert config_hash(stages.adapter_key_fields(nested)) == _key_as_text(
        nested, ["masking.input_budget=16", "precision=fp32", "lr=0.001", "seed=2"])
