"""Head pose retargeting: fit a head motion into the range the warp renderer draws plausibly.

The warp renderer moves one photo by a 2D thin-plate spline with a still ring around the face,
so a head rotation is drawn by pushing the face's pixels sideways: past a few degrees of turn
the far cheek folds over itself and the hair between the face and the ring smears. How far a
photo can be posed is measured from the warp field itself (:func:`warp_strain`: the Jacobian
determinant of the renderer's backward sampling grid, the local area ratio between output and
photo, inside the still ring; below ``low`` the photo is stretched, above ``high`` squashed,
≤ 0 folded) by :func:`pose_range`, which poses a portrait's own landmarks as
``Generator.landmarks`` does (:func:`posed_landmarks`) at increasing yaw, pitch, roll, shift
and zoom. ``disenttalk bench pose`` prints it per photo.

:func:`limit_pose` then brings any pose deviation (a reference video's head motion, a user's, the
model's) within :class:`PoseLimits`: per axis, values up to ``knee`` × the limit pass unchanged
and larger ones bend smoothly towards the limit (approaching it, never clipped), with a
slope ≤ 1 everywhere, so a sequence never jumps more from frame to frame than it did.

Axes of a pose deviation ``(rx, ry, rz, tx, ty, log s)`` (see :func:`~disenttalk.generate.motion.
pose_deviation`): the rotation vector's image-axis components are pitch (x, nodding), yaw (y,
turning) and roll (z, tilting in the image plane); the shift is in face-size units (pixels over
the face's scale, the RMS radius of its rigid points) and zoom is the change of log scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from disenttalk.config import StrictConfig

AXES = ("pitch", "yaw", "roll", "x", "y", "zoom")  # the six components of a pose deviation, in order
ROTATION_AXES = AXES[:3]
# Area-ratio bounds of the backward sampling grid (output pixel area per photo pixel area): beyond
# them the photo is stretched or squashed twofold, at ≤ 0 it folds.
STRAIN_LOW, STRAIN_HIGH = 0.5, 2.0
# A pose is "plausible" while at most this share of the pixels inside the still ring lies outside
# the bounds. The share grows along the face's edge (cheek and temple against hair and ears) as the
# head turns: on audrey's photo (256² crop) it is 0.06 % at 6° of yaw, where nothing shows, 1.2 %
# at 8°, where the far cheek ripples, 2.3 % at 10°; on grace_hopper's 0.15 % at 4°, 0.56 % at 5°
# (a ghost of the glasses' arm at the temple), 2.7 % at 8° (a doubled cheek).
STRAIN_TOLERANCE = 0.001


class PoseLimits(StrictConfig):
    """How far a head may be moved from the portrait's own pose (``Generator(pose_limits=...)``).

    Defaults hold for every measured photo (``disenttalk bench pose``: audrey, cage, franck,
    grace_hopper, the astronaut; README *Head pose*). Rotations in degrees, ``shift`` in face-size
    units, ``zoom`` in log scale. Values up to ``knee`` × a limit pass unchanged; beyond, they
    bend smoothly towards the limit. ``enabled: false`` passes every pose as it is.
    """

    enabled: bool = True
    pitch: float = Field(3.0, gt=0)
    yaw: float = Field(3.0, gt=0)
    roll: float = Field(12.0, gt=0)
    shift: float = Field(0.2, gt=0)
    zoom: float = Field(0.12, gt=0)
    knee: float = Field(0.5, ge=0, lt=1)
    fit_quantile: float = Field(0.98, gt=0, le=1)  # the share of a sequence ``fit_scale`` brings within the limits

    def bounds(self) -> np.ndarray:
        """Limit per deviation component [6] in the deviation's own units (radians, face units, log)."""
        rot = np.deg2rad([self.pitch, self.yaw, self.roll])
        return np.concatenate([rot, [self.shift, self.shift, self.zoom]])


def soft_limit(x: np.ndarray, limit: float | np.ndarray, knee: float = 0.5) -> np.ndarray:
    """Odd, monotone, slope ≤ 1: x where |x| ≤ knee·limit, then knee·limit + (1 − knee)·limit ·
    tanh((|x| − knee·limit) / ((1 − knee)·limit)) with x's sign, which approaches the limit.

    The slope is 1 at the knee from both sides and the curvature 0, so a motion crossing it
    shows no kink; ``knee=0`` is limit·tanh(x/limit)."""
    x = np.asarray(x, dtype=np.float64)
    limit = np.asarray(limit, dtype=np.float64)
    k = knee * limit
    room = limit - k
    over = np.maximum(np.abs(x) - k, 0.0)
    bent = k + room * np.tanh(over / room)
    return np.where(np.abs(x) <= k, x, np.sign(x) * bent)


def limit_pose(deviation: np.ndarray, limits: PoseLimits | None = None) -> np.ndarray:
    """Pose deviations [...,6] with each component softly limited (:func:`soft_limit`).

    Components are limited one by one: pitch, yaw and roll as the rotation vector's x, y, z
    (close to Euler angles in this range), the shift's x and y, the zoom."""
    limits = limits or PoseLimits()
    dev = np.asarray(deviation, dtype=np.float64)
    if not limits.enabled:
        return dev
    return soft_limit(dev, limits.bounds(), limits.knee)


def fit_scale(deviation: np.ndarray, limits: PoseLimits | None = None) -> np.ndarray:
    """Scale per component [6] that brings a whole sequence's deviations [T,6] within the limits:
    1 where its ``fit_quantile`` of |deviation| is within the limit, else limit / that quantile
    (a reference that turns 20° where 3° are drawn plausibly turns 3° at that moment, and half as
    far where it turned 10°, instead of every large turn flattening onto the limit)."""
    limits = limits or PoseLimits()
    dev = np.asarray(deviation, dtype=np.float64).reshape(-1, 6)
    dev = dev[np.isfinite(dev).all(-1)]
    if not limits.enabled or not len(dev):
        return np.ones(6)
    peak = np.quantile(np.abs(dev), limits.fit_quantile, axis=0)
    bounds = limits.bounds()
    return np.where(peak > bounds, bounds / np.maximum(peak, 1e-12), 1.0)


def mean_pose(pose: np.ndarray) -> np.ndarray:
    """The mean [6] of poses [T,6] (rotation: the chordal mean of the rotations; NaN rows left out)."""
    from scipy.spatial.transform import Rotation

    pose = np.asarray(pose, dtype=np.float64)
    ok = np.isfinite(pose).all(-1)
    if not ok.any():
        raise ValueError("mean_pose: no finite pose")
    rot = Rotation.from_rotvec(pose[ok, :3]).mean().as_rotvec()
    return np.concatenate([rot, pose[ok, 3:].mean(0)])


# -- measuring the renderer ---------------------------------------------------------------------
def posed_landmarks(landmarks: np.ndarray, deviation: np.ndarray,
                    canonical: np.ndarray | None = None) -> np.ndarray:
    """A face's landmarks [478,3] moved by pose deviations [T,6] → [T,478,3]: what
    ``Generator.landmarks`` draws for a motion that keeps the face's expression (the face's own
    shape at its pose composed with the deviation; z centred on the rigid points).

    ``canonical`` [478,3] is the shape the face's scale is measured against (the bundle's
    morphable mean in generation; default: the face itself frontalised), which sets how many
    pixels a face-size unit of shift is; rotation and zoom do not depend on it."""
    from disenttalk.face.pose import apply_pose, estimate_pose, frontalise, remove_pose
    from disenttalk.generate.motion import compose_pose

    lm = np.asarray(landmarks, dtype=np.float64)
    dev = np.atleast_2d(np.asarray(deviation, dtype=np.float64))
    pose0 = estimate_pose(lm[None], frontalise(lm) if canonical is None else canonical)  # [1,6]
    shape = remove_pose(lm[None], pose0)[0]
    return apply_pose(np.broadcast_to(shape, (len(dev), *shape.shape)), compose_pose(pose0[0], dev))


@dataclass(frozen=True)
class Strain:
    """Per frame [T]: the share of pixels inside the still ring stretched or squashed beyond the
    bounds (or folded), and the smallest and largest area ratio there."""

    bad: np.ndarray
    min_det: np.ndarray
    max_det: np.ndarray

    def plausible(self, tolerance: float = STRAIN_TOLERANCE) -> np.ndarray:
        """Frames [T] whose warp stretches, squashes or folds at most ``tolerance`` of the face area."""
        return self.bad <= tolerance


def ring_mask(renderer) -> np.ndarray:
    """Pixels [H,W] inside the renderer's still ring (the face oval scaled about its centre)."""
    from skimage import measure

    from disenttalk.face import topology as topo

    oval = renderer.source[list(topo.FACE_OVAL)] - 0.5  # pixel-index coordinates, as the renderer
    centre = oval.mean(0, keepdims=True)
    ring = centre + renderer.config.anchor_ring_scale * (oval - centre)
    ys, xs = np.mgrid[0:renderer.height, 0:renderer.width]
    inside = measure.points_in_poly(np.stack([xs.ravel(), ys.ravel()], 1), ring)
    return inside.reshape(renderer.height, renderer.width)


def warp_strain(renderer, targets: np.ndarray, low: float = STRAIN_LOW, high: float = STRAIN_HIGH,
                chunk: int = 16) -> Strain:
    """How much a :class:`~disenttalk.render.renderer.WarpRenderer` stretches, squashes or folds
    its photo to draw target landmarks [T,478,2|3]: the Jacobian determinant of its backward
    sampling grid (photo pixels read per output pixel, 1 = moved rigidly), inside the still ring."""
    import torch

    targets = np.asarray(targets, dtype=np.float32)
    mask = torch.as_tensor(ring_mask(renderer))
    scale = torch.tensor([(renderer.width - 1) / 2.0, (renderer.height - 1) / 2.0])
    source = torch.as_tensor(np.asarray(renderer.source, dtype=np.float32)[:, :2])
    bad, lo, hi = [], [], []
    with torch.inference_mode():
        for start in range(0, len(targets), chunk):
            t = torch.as_tensor(targets[start:start + chunk, :, :2])
            grid = renderer.field.backward_grid(t - source, renderer.config.inverse_iterations)
            px = grid.cpu() * scale  # [B,H,W,2], pixel units (the offset does not matter)
            dx = torch.gradient(px, dim=2)[0]  # ∂s/∂x [B,H,W,2]
            dy = torch.gradient(px, dim=1)[0]  # ∂s/∂y
            det = (dx[..., 0] * dy[..., 1] - dx[..., 1] * dy[..., 0])[:, mask]  # [B,P]
            bad.append(((det < low) | (det > high)).float().mean(1))
            lo.append(det.amin(1))
            hi.append(det.amax(1))
    return Strain(torch.cat(bad).numpy(), torch.cat(lo).numpy(), torch.cat(hi).numpy())


# Scan steps and ends per axis: degrees for rotations, face units for the shift, log for zoom.
_SCAN = {"pitch": (1.0, 45.0), "yaw": (1.0, 45.0), "roll": (1.0, 45.0),
         "x": (0.01, 0.6), "y": (0.01, 0.6), "zoom": (0.01, 0.5)}


def pose_range(portrait: np.ndarray, landmarks: np.ndarray, axes: tuple[str, ...] = AXES,
               tolerance: float = STRAIN_TOLERANCE, renderer=None, chunk: int = 8,
               ) -> dict[str, tuple[float, float]]:
    """The largest deviation each way (negative, positive) along each axis that the warp renderer
    draws on this portrait [S,S,3] with landmarks [478,3] while :func:`warp_strain` stays within
    ``tolerance``: degrees for pitch/yaw/roll, face-size units for x/y, log scale for zoom.

    Each axis is scanned outwards from 0 and the range ends before the first implausible step;
    an axis still plausible at the scan's end reports the end."""
    if renderer is None:
        from disenttalk.render.renderer import WarpRenderer

        renderer = WarpRenderer(np.asarray(portrait), np.asarray(landmarks, dtype=np.float32))
    out = {}
    for axis in axes:
        step, end = _SCAN[axis]
        amounts = np.arange(1, int(round(end / step)) + 1) * step
        values = np.deg2rad(amounts) if axis in ROTATION_AXES else amounts
        ends = []
        for sign in (-1.0, 1.0):
            reach = 0.0
            for start in range(0, len(amounts), chunk):  # outwards, a chunk at a time
                dev = np.zeros((len(values[start:start + chunk]), 6))
                dev[:, AXES.index(axis)] = sign * values[start:start + chunk]
                ok = warp_strain(renderer, posed_landmarks(landmarks, dev)).plausible(tolerance)
                if not ok.all():
                    first_bad = start + int(np.argmin(ok))
                    reach = amounts[first_bad - 1] if first_bad else 0.0
                    break
                reach = amounts[start + len(ok) - 1]
            ends.append(sign * round(float(reach), 6))
        out[axis] = (ends[0], ends[1])
    return out
