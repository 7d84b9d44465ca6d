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


@pytest.fixture(scope="session")
def astronaut_256() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut at 256² and its tracked landmarks [478,3] (the renderer tests' portrait)."""
    from skimage import data, transform

    from disenttalk.face.tracker import FaceTracker

    image = transform.resize(data.astronaut(), (256, 256), anti_aliasing=True)
    image = (image * 255).round().astype(np.uint8)
    with FaceTracker(static=True) as tracker:
        landmarks = tracker.track_image(image)
    assert landmarks is not None
    return image, landmarks
