"""Shared fixtures."""

from __future__ import annotations

import os

import numpy as np
import pytest

# Tests run offline and on CPU; keep thread pools small on the 2-core CI machine.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut portrait, uint8 [512,512,3] RGB."""
    from skimage import data

    return data.astronaut()
