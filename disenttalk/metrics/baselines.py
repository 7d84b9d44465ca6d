"""Reference "systems" scored on the same clips: a still face and the truth delayed by half a second.

A still face (the first frame repeated) shows what a metric gives for no motion at all; the truth
delayed by 0.5 s has perfect motion statistics but wrong timing, so it separates metrics that
measure sync from those that only measure motion.
"""

from __future__ import annotations

import numpy as np

SHIFT_SECONDS = 0.5
BASELINES = ("still", "shifted")


def still(x: np.ndarray) -> np.ndarray:
    """The first frame of a sequence [T,...] repeated T times."""
    x = np.asarray(x)
    return np.repeat(x[:1], len(x), axis=0)


def delayed(x: np.ndarray, frames: int) -> np.ndarray:
    """A sequence [T,...] delayed by ``frames`` (the start holds the first frame), same length."""
    x = np.asarray(x)
    frames = int(np.clip(frames, 0, len(x)))
    if frames == 0:
        return x.copy()
    return np.concatenate([np.repeat(x[:1], frames, axis=0), x[: len(x) - frames]])


def shift_frames(fps: float, seconds: float = SHIFT_SECONDS) -> int:
    """Frames in ``seconds`` at ``fps`` (rounded)."""
    return int(round(seconds * fps))


def baseline(name: str, x: np.ndarray, fps: float) -> np.ndarray:
    """Apply baseline ``name`` (``still`` or ``shifted``) to a per-frame array [T,...]."""
    if name == "still":
        return still(x)
    if name == "shifted":
        return delayed(x, shift_frames(fps))
    raise KeyError(f"unknown baseline {name!r}; expected one of {BASELINES}")
