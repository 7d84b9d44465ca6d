"""Generation: bundle → motion (windows, streaming, controls) → frames → video.

The names below load on first use, so ``disenttalk.generate.motion`` (controls and their
limits, which the API schemas use) imports without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"Generator": "generator", "Settings": "generator", "Controls": "motion", "Motion": "motion",
          "MotionStream": "stream", "WindowPlan": "stream"}

__all__ = ["Controls", "Generator", "Motion", "MotionStream", "Settings", "WindowPlan"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
