"""Typed configs: overrides are type-checked and errors name the field."""

import pytest

from pairless.config import Config, ConfigError, apply_overrides


class Inner(Config):
    rate: float = 0.1
    names: list[str] = []


class Outer(Config):
    steps: int = 10
    per_name: dict[str, int] = {}
    inner: Inner = Inner()
    items: list[Inner] = [Inner(), Inner()]


def test_override_nested_and_listed_values():
    config = apply_overrides(Outer(),
                             ["steps=20", "inner.rate=3e-4", 'inner.names=["a","b"]', "items.1.rate=0.5"])
    assert config.steps == 20
    assert config.inner.rate == pytest.approx(3e-4)
    assert config.inner.names == ["a", "b"]
    assert config.items[1].rate == 0.5 and config.items[0].rate == 0.1


def test_override_adds_keys_to_a_mapping_and_validates_them():
    config = apply_overrides(Outer(), ["per_name.rgb=3", "per_name.depth=4"])
    assert config.per_name == {"rgb": 3, "depth": 4}
    with pytest.raises(ConfigError, match="per_name.rgb"):
        apply_overrides(Outer(), ["per_name.rgb=many"])


def test_tokenizer_overrides_name_a_modality_the_preset_does_not_list():
    from pairless.tokenizers.neural_training import preset_config

    config = apply_overrides(preset_config("tiny"), [
        "normalization.depth=standard", "modality_steps.depth=99", "spatial.modality_levels.depth=[8,8]"])
    assert config.normalization == {"depth": "standard"} and config.modality_steps["depth"] == 99
    assert config.spatial.modality_levels["depth"] == [8, 8]
    with pytest.raises(ConfigError, match="normalization.depth"):
        apply_overrides(preset_config("tiny"), ["normalization.depth=bogus"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stepz=3", "unknown key 'stepz'"),
        ("inner.nope=3", "unknown key 'nope'"),
        ("steps=abc", "steps"),
        ("missing.rate=1", "no config section 'missing'"),
        ("items.7.rate=1", "not an index below 2"),
        ("steps", "expected key=value"),
    ],
)
def test_bad_override_names_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Outer(), [override])


def test_unknown_key_refused_at_validation():
    with pytest.raises(Exception, match="extra"):
        Outer.model_validate({"steps": 1, "typo": 2})


def test_laid_over_merges_sections_and_replaces_values_whole():
    from pairless.config import laid_over

    base = apply_overrides(Outer(), ["per_name.rgb=3", "inner.rate=0.5"])
    config = laid_over(base, {"steps": 4, "inner": {"names": ["a"]}, "per_name": {"depth": 1}})
    assert config.steps == 4
    assert config.inner.rate == 0.5 and config.inner.names == ["a"]  # a section: merged field by field
    assert config.per_name == {"depth": 1}  # a mapping is a value: replaced whole, like --set per_name={...}
    assert laid_over(base, {"per_name": {}}).per_name == {}
    with pytest.raises(ConfigError, match="stage.inner.rate"):
        laid_over(base, {"inner": {"rate": "fast"}}, "stage")
    with pytest.raises(ConfigError, match="stage.stepz"):
        laid_over(base, {"stepz": 1}, "stage")
