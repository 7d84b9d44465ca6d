"""Ray job entrypoint: ``python -m workflows.preprocess --manifest URI --out URI``."""

import typer

from workflows.preprocess.driver import cli

typer.run(cli)
