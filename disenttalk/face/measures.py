"""Geometric measures on FaceMesh landmarks: face size, mouth opening, eye aspect ratio, blinks.

All functions take landmarks ``[...,478,3]`` and are vectorised over the leading dims; NaN
landmarks (frames without a face) give NaN measures.
"""

from __future__ import annotations

import numpy as np

from disenttalk.face import topology as topo

# Inner-lip pairs without the shared corners (which are always at distance 0).
_INNER_UPPER = np.array(topo.LIPS_INNER_UPPER[1:-1])
_INNER_LOWER = np.array(topo.LIPS_INNER_LOWER[1:-1])


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


def face_size(landmarks: np.ndarray) -> np.ndarray:
    """Outer eye-corner distance [...]: a scale that expressions (mouth, lids) barely change."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return _dist(lm[..., topo.RIGHT_EYE_OUTER, :], lm[..., topo.LEFT_EYE_OUTER, :])


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Mean inner-lip gap over the upper/lower pairs, divided by face size [...] (0 = closed)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    gap = _dist(lm[..., _INNER_UPPER, :], lm[..., _INNER_LOWER, :]).mean(-1)
    return gap / face_size(lm)


def _ear(lm: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    p1, p2, p3, p4, p5, p6 = (lm[..., i, :] for i in idx)
    return (_dist(p2, p6) + _dist(p3, p5)) / (2.0 * _dist(p1, p4))


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """Six-point eye aspect ratio (Soukupová & Čech 2016) [...,2] for (right, left) eye."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([_ear(lm, topo.RIGHT_EYE_EAR), _ear(lm, topo.LEFT_EYE_EAR)], axis=-1)


def detect_blinks(
    ear: np.ndarray,
    fps: float,
    threshold: float = 0.7,
    min_frames: int = 2,
    max_seconds: float = 1.0,
) -> list[tuple[float, float]]:
    """Blinks as (start_s, end_s): runs where EAR < ``threshold`` × the clip's median EAR.

    ``ear`` is [T] or [T,2] (both eyes are averaged: a blink closes both). The median over
    the clip is the open-eye baseline, since eyes are open most of the time; runs shorter than
    ``min_frames`` are tracking noise and runs longer than ``max_seconds`` are eyes kept shut,
    not blinks. NaN frames (no face) end a run. ``end_s`` is exclusive.
    """
    ear = np.asarray(ear, dtype=np.float64)
    if ear.ndim == 2:
        ear = ear.mean(-1)
    finite = np.isfinite(ear)
    if not finite.any():
        return []
    baseline = float(np.median(ear[finite]))
    closed = finite & (ear < threshold * baseline)
    # Run boundaries of the boolean mask: +1 where a run starts, -1 one past where it ends.
    edges = np.diff(np.concatenate([[0], closed.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [
        (s / fps, e / fps)
        for s, e in zip(starts, ends, strict=True)
        if e - s >= min_frames and (e - s) / fps <= max_seconds
    ]


def blink_rate(ear: np.ndarray, fps: float, **kwargs) -> float:
    """Blinks per second of clip (``kwargs`` go to :func:`detect_blinks`)."""
    n = len(np.asarray(ear))
    return len(detect_blinks(ear, fps, **kwargs)) / (n / fps) if n else 0.0
