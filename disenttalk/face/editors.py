"""Geometric face editors on FaceMesh landmarks: close the lips, close the eyes, open the mouth.

These play the part of the paper's face-editing model (Sec. III-A): Eq. 1 compares the
expression code of a clip with that of its lips-closed / eyes-closed edit. An edit moves a
contour's "handle" points (the inner lips, the upper lids) exactly and lets nearby points
follow through a smooth displacement field, so the edited shape stays a plausible face:

* the field is laid out in a local frame of the region (x along its corner-to-corner axis,
  y down the face, both in face-size units), so it is rotation and scale invariant;
* along x, handle displacements are spread by a Gaussian kernel (Nadaraya–Watson);
* across the contour, points above it follow the upper handles and points below follow the
  lower ones (a soft sigmoid at the midline), with a Gaussian falloff in the distance from
  the contour and beyond the corners.

All functions take ``[...,478,3]`` (any leading dims), are pure numpy and return new arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from disenttalk.face import topology as topo
from disenttalk.face.measures import face_size


@dataclass(frozen=True)
class _Falloff:
    """Reach of a displacement field, in face sizes (outer eye-corner distances)."""

    up: float  # above the upper contour
    down: float  # below the lower contour
    side: float  # beyond the corners
    kernel: float = 0.05  # Gaussian width along the contour
    midline: float = 0.01  # softness of the upper/lower decision


# The jaw carries everything under the mouth, so the lower field reaches the chin; the upper
# lip moves on its own and drags only the skin just above it. Eyelids barely reach the brow.
_LIPS = _Falloff(up=0.15, down=0.9, side=0.15)
_EYES = _Falloff(up=0.06, down=0.04, side=0.04)


def _frame(lm: np.ndarray, corner_a: int, corner_b: int) -> tuple[np.ndarray, ...]:
    """Origin [...,3], x axis [...,3] (corner a → b) and down axis [...,3] of a region."""
    origin = 0.5 * (lm[..., corner_a, :] + lm[..., corner_b, :])
    x = lm[..., corner_b, :] - lm[..., corner_a, :]
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    down = lm[..., topo.CHIN, :] - lm[..., topo.FOREHEAD, :]
    down = down - (down * x).sum(-1, keepdims=True) * x  # Gram–Schmidt: down ⟂ x
    down = down / np.linalg.norm(down, axis=-1, keepdims=True)
    return origin, x, down


def _smooth(x_at: np.ndarray, x_k: np.ndarray, v_k: np.ndarray, width: float) -> np.ndarray:
    """Kernel regression of values v_k [...,K,C] at positions x_k [...,K] onto x_at [...,P]."""
    w = np.exp(-0.5 * ((x_at[..., :, None] - x_k[..., None, :]) / width) ** 2)  # [...,P,K]
    w = w / (w.sum(-1, keepdims=True) + 1e-12)
    return np.einsum("...pk,...kc->...pc", w, v_k)


def _warp(
    lm: np.ndarray,
    upper: tuple[int, ...],
    lower: tuple[int, ...],
    d_upper: np.ndarray,
    d_lower: np.ndarray,
    reach: _Falloff,
) -> np.ndarray:
    """Move handles ``upper``/``lower`` by d_upper/d_lower [...,K,3]; everything else follows."""
    size = face_size(lm)[..., None, None]  # [...,1,1]
    origin, ax, down = _frame(lm, upper[0], upper[-1])
    rel = (lm - origin[..., None, :]) / size  # [...,478,3] in face sizes
    x, y = (rel * ax[..., None, :]).sum(-1), (rel * down[..., None, :]).sum(-1)  # [...,478]
    up_idx, lo_idx = np.asarray(upper), np.asarray(lower)

    # Contour heights at every point's x, and which side of the midline each point is on.
    y_up = _smooth(x, x[..., up_idx], y[..., up_idx, None], reach.kernel)[..., 0]
    y_lo = _smooth(x, x[..., lo_idx], y[..., lo_idx, None], reach.kernel)[..., 0]
    below = 1.0 / (1.0 + np.exp(-np.clip((y - 0.5 * (y_up + y_lo)) / reach.midline, -50, 50)))

    half_width = 0.5 * np.abs(x[..., up_idx[-1]] - x[..., up_idx[0]])[..., None]
    beyond = np.maximum(np.abs(x) - half_width, 0.0)
    side = np.exp(-0.5 * (beyond / reach.side) ** 2)
    w_up = side * np.exp(-0.5 * (np.maximum(y_up - y, 0.0) / reach.up) ** 2)
    w_lo = side * np.exp(-0.5 * (np.maximum(y - y_lo, 0.0) / reach.down) ** 2)

    field_up = _smooth(x, x[..., up_idx], d_upper, reach.kernel)  # [...,478,3]
    field_lo = _smooth(x, x[..., lo_idx], d_lower, reach.kernel)
    out = lm + ((1.0 - below) * w_up)[..., None] * field_up + (below * w_lo)[..., None] * field_lo
    # Handles land exactly where asked (the kernel only smooths their neighbours).
    out[..., up_idx, :] = lm[..., up_idx, :] + d_upper
    out[..., lo_idx, :] = lm[..., lo_idx, :] + d_lower
    return out


def _check(landmarks: np.ndarray, amount: float) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape[-2:] != (topo.NUM_LANDMARKS, 3):
        raise ValueError(f"expected landmarks [...,478,3], got {lm.shape}")
    if not 0.0 <= amount <= 1.0:
        raise ValueError(f"amount must be in [0, 1], got {amount}")
    return lm


def close_lips(landmarks: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """Inner-lip pairs meet at their midline (``amount`` < 1: part of the way)."""
    lm = _check(landmarks, amount)
    up, lo = lm[..., topo.LIPS_INNER_UPPER, :], lm[..., topo.LIPS_INNER_LOWER, :]
    mid = 0.5 * (up + lo)
    out = _warp(lm, topo.LIPS_INNER_UPPER, topo.LIPS_INNER_LOWER,
                amount * (mid - up), amount * (mid - lo), _LIPS)
    return out.astype(np.asarray(landmarks).dtype, copy=False)


def close_eyes(landmarks: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """Upper eyelids move onto the lower lids of both eyes (``amount`` < 1: part of the way)."""
    out = _check(landmarks, amount)
    for upper, lower in ((topo.RIGHT_EYE_UPPER, topo.RIGHT_EYE_LOWER),
                         (topo.LEFT_EYE_UPPER, topo.LEFT_EYE_LOWER)):
        up, lo = out[..., upper, :], out[..., lower, :]
        out = _warp(out, upper, lower, amount * (lo - up), np.zeros_like(lo), _EYES)
    return out.astype(np.asarray(landmarks).dtype, copy=False)


def open_mouth(landmarks: np.ndarray, amount: float | np.ndarray) -> np.ndarray:
    """Drop the jaw by ``amount`` × face size: the lower lip and chin go down, the lips part.

    ``amount`` is a scalar or an array broadcasting against the leading dims (e.g. [T] for a
    per-frame opening); values around 0.1–0.3 look like speech.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    amount = np.asarray(amount, dtype=np.float64)
    if np.any(amount < 0):
        raise ValueError("open_mouth: amount must be >= 0")
    _, _, down = _frame(lm, topo.LIPS_INNER_UPPER[0], topo.LIPS_INNER_UPPER[-1])
    drop = (amount * face_size(lm))[..., None, None] * down[..., None, :]  # [...,1,3]
    k = len(topo.LIPS_INNER_LOWER)
    # The corners are shared by both contours; they go down half way. The upper lip lifts a
    # little (15 %), as it does when the mouth opens.
    taper = np.ones(k)
    taper[[0, -1]] = 0.5
    d_lower = drop * taper[:, None]
    d_upper = np.broadcast_to(-0.15 * drop, d_lower.shape).copy()
    d_upper[..., [0, -1], :] = d_lower[..., [0, -1], :]
    out = _warp(lm, topo.LIPS_INNER_UPPER, topo.LIPS_INNER_LOWER, d_upper, d_lower, _LIPS)
    return out.astype(np.asarray(landmarks).dtype, copy=False)
