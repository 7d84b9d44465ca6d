"""Where local state lives: ``workspace/`` under the project, or ``$DISENTTALK_HOME``."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """Root of local state (corpora, shards, MLflow db, Ray storage, outputs); not created here."""
    env = os.environ.get("DISENTTALK_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return Path.cwd() / "workspace"
