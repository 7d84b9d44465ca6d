"""The ``disenttalk`` command line: the user's front door to every stage.

Each command lives in its own module and is named here by module path (``"workflows.fit:cli"``);
a module is imported only when its command runs or its help is shown, so ``disenttalk --help``
stays fast and the CLI is the one place in ``workflows`` that reaches ``serve`` and ``tune``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import click
import typer
import typer.main
from typer.core import TyperGroup

# name → "module:function"; registration order is the order ``--help`` lists them in
COMMANDS = {
    "inspect": "workflows.inspect:inspect",
    "manifest": "workflows.manifest:cli",
    "preprocess": "workflows.preprocess:cli",
    "fit": "workflows.fit:cli",
    "train": "workflows.train:cli",
    "demo-data": "workflows.demo_data:demo_data",
    "upload": "workflows.upload:cli",
    "tune-sampler": "tune.sampler:cli",
    "sweep": "tune.sweep:cli",
    "evaluate": "workflows.evaluate:evaluate",
    "curve": "workflows.curve:cli",
    "register": "workflows.register:cli",
    "generate": "workflows.generate:cli",
    "quickstart": "workflows.quickstart:cli",
    "pipeline": "workflows.pipeline:cli",
    "submit": "workflows.platform.submit:cli",
    "serve": "serve.app:cli",
}
BENCH_COMMANDS = {
    "motion": "workflows.bench:motion",
    "face": "workflows.bench:face",
    "pose": "workflows.bench:pose",
    "detail": "workflows.bench:detail",
    "train": "workflows.bench:train_speed",
    "voices": "workflows.bench_voices:voices",
    "generate": "serve.bench:generate_bench",
    "serve": "serve.bench:serve_bench",
    "soak": "serve.soak:soak",
    "stream": "serve.bench_stream:stream_bench",
}
# per-command settings Typer would otherwise take from the function (``disenttalk submit``
# passes unknown options through to the stage it submits)
SETTINGS = {"submit": "workflows.platform.submit:CONTEXT"}


def resolve(target: str) -> Any:
    """``"package.module:name"`` → the object, importing the module."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def click_command(name: str, function: Callable[..., Any], **settings: Any) -> click.Command:
    """The click command Typer builds for ``function`` under ``name``."""
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name, **settings)(function)
    command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """A command group whose commands are imported by module path on first use."""

    commands_by_path: dict[str, str] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *self.commands_by_path]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands_by_path:
            return super().get_command(ctx, name)
        settings = {"context_settings": resolve(SETTINGS[name])} if name in SETTINGS else {}
        return click_command(name, resolve(self.commands_by_path[name]), **settings)


def lazy_group(commands: dict[str, str]) -> type[LazyGroup]:
    return type("LazyGroup", (LazyGroup,), {"commands_by_path": commands})


app = typer.Typer(
    name="disenttalk",
    cls=lazy_group(COMMANDS),
    help="Cross-lingual talking-face generation: data, training, evaluation and generation on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench = typer.Typer(cls=lazy_group(BENCH_COMMANDS), no_args_is_help=True,
                    help="Benchmarks: print JSON lines with measured figures.")
app.add_typer(bench, name="bench")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
