"""The project's fixed numbers and names, each defined once and imported wherever it is used."""

from __future__ import annotations

SAMPLE_RATE = 16_000  # Hz, mono: the paper's audio rate; every waveform inside the project is at it
DEFAULT_STEPS = 10  # DDIM steps per generation or stream window (quadratic spacing)

MODEL_NAME = "disenttalk"  # the MLflow registered model
CHAMPION_ALIAS = "champion"  # the alias serving and generation load by default
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION_ALIAS}"
