"""Typed, frozen, strict configuration.

Every stage has a config class derived from :class:`StrictConfig`: unknown keys and wrong
types are errors, instances are immutable. Configs load from YAML, accept ``section.key=value``
overrides, flatten to dotted keys (the MLflow params) and round-trip through JSON exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict

C = TypeVar("C", bound="StrictConfig")


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


class StrictConfig(BaseModel):
    """Base for all configs: frozen, no extra keys, no silent type coercion of strings to numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Validate a plain mapping (as read from JSON/YAML) into a config."""
        try:
            # JSON mode relaxes strictness only where JSON cannot express the type (tuples, paths).
            return cls.model_validate_json(json.dumps(dict(data)))
        except Exception as exc:  # pydantic.ValidationError, or a JSON type error
            raise ConfigError(f"invalid {cls.__name__}: {exc}") from exc

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, overrides: Iterable[str] = ()) -> C:
        """Load a YAML file, apply ``a.b=value`` overrides, validate."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        return cls.from_dict(apply_overrides(data, overrides))

    def with_overrides(self: C, overrides: Iterable[str]) -> C:
        """A copy with ``a.b=value`` overrides applied (validated again)."""
        return type(self).from_dict(apply_overrides(self.to_dict(), overrides))

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """JSON text; ``from_json(to_json())`` equals the original."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        """Write the JSON next to a checkpoint or bundle (atomically)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """Read a config written by :meth:`save`."""
        return cls.from_json(Path(path).read_text())

    def flatten(self) -> dict[str, Any]:
        """Dotted keys → scalar values (lists joined as JSON), e.g. for MLflow params."""
        return flatten(self.to_dict())


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into dotted keys; lists become JSON strings."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested dict; values parse as YAML scalars."""
    result = json.loads(json.dumps(dict(data)))  # deep copy of plain data
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        dotted, raw = item.split("=", 1)
        keys = [k for k in dotted.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"override {item!r} has an empty key")
        node = result
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {key!r} is not a section")
            node = child
        node[keys[-1]] = _parse_value(raw)
    return result


def _parse_value(raw: str) -> Any:
    """A YAML scalar/list; also ``1e-3``-style floats, which YAML 1.1 reads as strings."""
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
