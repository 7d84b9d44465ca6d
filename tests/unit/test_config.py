"""Strict configs: unknown keys and wrong types are errors; JSON round trip is exact."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from disenttalk.config import ConfigError, StrictConfig, apply_overrides, flatten


class Inner(StrictConfig):
    dim: int = 8
    dilations: tuple[int, ...] = (1, 2, 4)


class Outer(StrictConfig):
    name: str = "x"
    lr: float = 1e-4
    inner: Inner = Inner()


def test_defaults_round_trip_exactly():
    cfg = Outer()
    assert Outer.from_json(cfg.to_json()) == cfg


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigError, match="extra"):
        Outer.from_dict({"inner": {"dimm": 3}})


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError):
        Outer.from_dict({"inner": {"dim": "eight"}})
    with pytest.raises(ConfigError):
        Outer.from_dict({"lr": "fast"})


def test_frozen():
    cfg = Outer()
    with pytest.raises(ValidationError, match="frozen"):
        cfg.lr = 1.0  # type: ignore[misc]


def test_overrides_parse_yaml_scalars_and_revalidate():
    cfg = Outer().with_overrides(["inner.dim=16", "lr=0.001", "inner.dilations=[1,3]"])
    assert cfg.inner.dim == 16 and cfg.lr == 0.001 and cfg.inner.dilations == (1, 3)
    assert Outer().with_overrides(["lr=1e-3"]).lr == 0.001  # YAML 1.1 alone reads this as a string
    assert Outer().with_overrides(["name=1e-3x"]).name == "1e-3x"
    with pytest.raises(ConfigError):
        Outer().with_overrides(["inner.nope=1"])
    with pytest.raises(ConfigError):
        apply_overrides({}, ["no-equals-sign"])


def test_yaml_file_and_flatten(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: demo\ninner:\n  dim: 4\n")
    cfg = Outer.from_yaml(path, ["lr=0.5"])
    flat = cfg.flatten()
    assert flat == {"name": "demo", "lr": 0.5, "inner.dim": 4, "inner.dilations": "[1, 2, 4]"}
    assert flatten({"a": {"b": {"c": 1}}}) == {"a.b.c": 1}


def test_save_load(tmp_path):
    cfg = Outer(name="saved")
    cfg.save(tmp_path / "config.json")
    assert Outer.load(tmp_path / "config.json") == cfg
