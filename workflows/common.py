"""What every stage's command shares: loading its config (YAML + ``--set``) and its end summary."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from disenttalk.config import StrictConfig, apply_overrides

C = TypeVar("C", bound=StrictConfig)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def default_config_path(stage: str) -> Path:
    """``configs/<stage>.yaml`` of the checkout."""
    return CONFIG_DIR / f"{stage}.yaml"


def load_config(
    cls: type[C], stage: str, path: str | Path | None = None, overrides: Iterable[str] = ()
) -> C:
    """``path`` (or ``configs/<stage>.yaml`` if present, else the class defaults) + overrides."""
    overrides = list(overrides)
    if path is None and default_config_path(stage).exists():
        path = default_config_path(stage)
    if path is not None:
        return cls.from_yaml(path, overrides)
    return cls.from_dict(apply_overrides({}, overrides))


def format_summary(title: str, items: Mapping[str, Any]) -> str:
    """A one-screen, aligned ``key  value`` block; nested mappings are indented."""
    lines = [f"== {title} =="]

    def add(mapping: Mapping[str, Any], indent: int) -> None:
        width = max((len(str(k)) for k in mapping), default=0)
        for key, value in mapping.items():
            if isinstance(value, Mapping):
                lines.append(" " * indent + f"{key}:")
                add(value, indent + 2)
            else:
                shown = f"{value:.3f}" if isinstance(value, float) else json.dumps(value)
                shown = shown.strip('"')
                lines.append(" " * indent + f"{str(key).ljust(width)}  {shown}")

    add(items, 2)
    return "\n".join(lines)
