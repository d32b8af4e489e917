"""Typed configs: a strict pydantic base class and ``--set a.b=3`` overrides.

Every stage's config derives from :class:`Config`: unknown keys and wrong
types are refused at validation with an error naming the dotted field.
``apply_overrides(config, ["base_lr=3e-4", "model.dim=256"])`` returns
a new validated config; values are parsed as JSON when they parse
(numbers, booleans, lists) and as plain strings otherwise.
"""

from __future__ import annotations

import json
import typing
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A config value is wrong; the message names the field and what is allowed."""


class Config(BaseModel):
    """Base for all configs: strict about unknown keys, validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        if prefix:
            location = f"{prefix}.{location}" if location else prefix
        lines.append(f"{location}: {item['msg']}")
    return "; ".join(lines)


def validate(cls: type[C], data: dict, prefix: str = "") -> C:
    """``cls.model_validate(data)`` with a ConfigError that names every bad field."""
    try:
        return cls.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, prefix)) from None


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def overrides_as_data(overrides: list[str] | tuple[str, ...]) -> dict:
    """``["model.dim=32", "base_lr=1e-4"]`` -> ``{"model": {"dim": 32}, "base_lr": 0.0001}``: command-line
    overrides as the nested data of a config (values parsed as :func:`apply_overrides` parses them), for
    the edge where a script takes ``--set`` strings and hands a typed config on."""
    data: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. base_lr=3e-4")
        key, raw = item.split("=", 1)
        *sections, name = key.strip().split(".")
        node = data
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = _parse_value(raw)
    return data


def merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it, nested sections merged key by key (``changes`` wins)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def laid_over(config: C, changes: dict, prefix: str = "") -> C:
    """A copy of ``config`` with ``changes`` (nested data: ``{"spatial": {"steps": 8}}``) laid over it and
    validated (errors name ``prefix``.field). A config section is merged field by field; any other value is
    replaced whole, a mapping included (``{"spatial": {"modality_levels": {}}}`` empties the preset's), as
    :func:`apply_overrides` replaces the value of the key it names: the typed form of ``--set`` overrides."""
    data = _laid_over_data(type(config), config.model_dump(mode="json"), changes)
    return validate(type(config), data, prefix)


def _laid_over_data(schema, data: dict, changes: dict) -> dict:
    out = dict(data)
    for key, value in changes.items():
        section = _field_schema(schema, key)
        is_section = isinstance(section, type) and issubclass(section, BaseModel)
        if is_section and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _laid_over_data(section, out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(config: C, overrides: list[str] | tuple[str, ...]) -> C:
    """Return a copy of ``config`` with ``key.sub=value`` overrides applied and re-validated."""
    data = config.model_dump(mode="json")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. base_lr=3e-4")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node, schema = data, type(config)
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):  # list items by index: runs.0.total_tokens=...
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"override {key!r}: {where!r} is not an index below {len(node)}")
                node, schema = node[int(part)], _item_schema(schema)
                continue
            if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict | list):
                raise ConfigError(f"override {key!r}: no config section {where!r}; sections: {_keys(node)}")
            node, schema = node[part], _field_schema(schema, part)
        # a free-form mapping (e.g. normalization.depth=..., modality_steps.rgb=...) takes new keys
        is_mapping = typing.get_origin(schema) is dict or schema is dict
        if not isinstance(node, dict) or (parts[-1] not in node and not is_mapping):
            raise ConfigError(f"override {key!r}: unknown key {parts[-1]!r}; allowed: {_keys(node)}")
        node[parts[-1]] = _parse_value(raw)
    return validate(type(config), data)


def _field_schema(schema, name: str):
    """The annotation of field ``name`` of a config class (None when ``schema`` is not one)."""
    if isinstance(schema, type) and issubclass(schema, BaseModel) and name in schema.model_fields:
        return schema.model_fields[name].annotation
    return None


def _item_schema(schema):
    """The item type of a ``list[X]`` annotation (None otherwise)."""
    args = typing.get_args(schema) if typing.get_origin(schema) is list else ()
    return args[0] if args else None


def _keys(node) -> str:
    return ", ".join(sorted(node)) if isinstance(node, dict) else "(not a section)"
