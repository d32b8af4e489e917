"""Typed configs: overrides are type-checked and errors name the field."""

import pytest

from pairless.config import Config, ConfigError, apply_overrides


class Inner(Config):
    rate: float = 0.1
    names: list[str] = []


class Outer(Config):
    steps: int = 10
    inner: Inner = Inner()
    items: list[Inner] = [Inner(), Inner()]


def test_override_nested_and_listed_values():
    config = apply_overrides(Outer(),
                             ["steps=20", "inner.rate=3e-4", 'inner.names=["a","b"]', "items.1.rate=0.5"])
    assert config.steps == 20
    assert config.inner.rate == pytest.approx(3e-4)
    assert config.inner.names == ["a", "b"]
    assert config.items[1].rate == 0.5 and config.items[0].rate == 0.1


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
