"""What every stage's command shares: loading its config (YAML + ``--set``), its end summary, and
one-line errors for what the user can fix."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import typer

from disenttalk.config import StrictConfig, apply_overrides

C = TypeVar("C", bound=StrictConfig)
F = TypeVar("F", bound=Callable[..., Any])


class UserError(Exception):
    """Something the user can fix (a missing input, an unknown model, an unreachable server): the
    command prints it as one line and exits 2, without a traceback."""


def user_errors(command: str) -> Callable[[F], F]:
    """Decorate a stage's command: :class:`UserError` and missing files end it with
    ``disenttalk <command>: <message>`` on stderr and exit status 2."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (UserError, FileNotFoundError) as exc:
                typer.echo(f"disenttalk {command}: {exc}", err=True)
                raise typer.Exit(2) from None

        return run  # type: ignore[return-value]

    return wrap

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def default_config_path(stage: str) -> Path:
    """``configs/<stage>.yaml`` of the checkout."""
    return CONFIG_DIR / f"{stage}.yaml"


def load_config(
    cls: type[C], stage: str, path: str | Path | None = None, overrides: Iterable[str] = ()
) -> C:
    """``path`` (or ``configs/<stage>.yaml`` if present, else the class defaults) + overrides."""
    from workflows.platform.storage import local_path

    overrides = list(overrides)
    if path is not None:
        path = local_path(path, f"--config ({stage})")
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
