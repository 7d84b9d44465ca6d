"""Landmark sequences as the sync evaluator reads them: gaps filled, lips as normalised parameters."""

from __future__ import annotations

from typing import Any

import numpy as np


def fill_gaps(x: np.ndarray) -> np.ndarray:
    """Rows with NaN (no face) replaced by the nearest earlier valid row (or the first valid one)."""
    x = np.array(x, dtype=np.float32)
    ok = np.isfinite(x.reshape(len(x), -1)).all(-1)
    if not ok.any():
        return np.zeros_like(x)
    idx = np.maximum.accumulate(np.where(ok, np.arange(len(x)), -1))
    idx[idx < 0] = np.flatnonzero(ok)[0]
    return x[idx]


def landmark_lips(landmarks: np.ndarray, morphable: Any, lip_dims: Any, norm: dict) -> np.ndarray | None:
    """Normalised lip expression parameters [T,K_lip] of landmarks [T,478,3] (gaps filled); None without a face."""
    if not np.isfinite(landmarks).all(axis=(1, 2)).any():
        return None  # the face was lost in every frame: no lip sync to measure
    expression, _, _ = morphable.encode(fill_gaps(landmarks))
    lip = list(lip_dims)
    return ((expression[:, lip] - norm["mean"][lip]) / norm["std"][lip]).astype(np.float32)
