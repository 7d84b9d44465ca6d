"""Ray job entrypoint: ``python -m workflows.train --data URI --fit URI --out URI``."""

import typer

from workflows.train.driver import cli

typer.run(cli)
