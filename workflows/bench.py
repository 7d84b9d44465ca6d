"""``disenttalk bench ...``: speed benchmarks that print figures (never asserted in tests)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Benchmarks: print JSON lines with measured figures.", no_args_is_help=True)
