"""Where local state lives: ``workspace/`` under the current directory, or ``$DISENTTALK_HOME``.

A process that starts Ray workers resolves this once and hands the absolute path to them
(``workflows.platform.raycluster.locations``); a worker's own current directory is not the user's.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root of local state (corpora, shards, MLflow db, Ray storage, outputs); not created here."""
    env = os.environ.get("DISENTTALK_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return (Path.cwd() / "workspace").resolve()
