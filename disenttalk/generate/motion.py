"""What a generation produces (:class:`Motion`) and how a user steers it (:class:`Controls`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from disenttalk.face.regions import RegionSplit

POSE_DIMS = 6  # rotation (3) + translation (3), as the morphable model encodes head pose
MAX_BLINK_RATE = 1.5  # blinks per second a request may ask for
POSE_CENTRES = ("first", "mean")  # what a reference pose's change is measured from


@dataclass(frozen=True, eq=False)
class Controls:
    """Per-region intensity and where eyes and head pose come from.

    ``*_scale`` multiplies that region's motion, its deviation from the model's resting expression
    (0 = the region stays as in the portrait, 1 = as generated, >1 = exaggerated). ``eyes`` is
    ``"generate"`` or a reference expression sequence [T_ref, N] whose eye dims are given to the
    denoiser as known values on every frame. ``pose`` is ``"still"`` (the portrait's own pose)
    or a reference pose sequence [T_ref, 6] (rotation vector, tx, ty, log s per frame, as
    ``MorphableModel.encode`` gives it), applied as its change from its ``pose_centre``:
    ``"first"`` (its first frame, default: the portrait is taken to be where the reference
    starts) or ``"mean"`` (its mean pose: the portrait is taken to be where the reference usually
    is, so a reference that starts turned away does not hold the portrait turned the other way).
    ``pose_scale`` multiplies that change: a number (0 = still, 1 = as in the reference) or
    ``"fit"`` (default): per axis, the scale that brings the reference's 98th percentile within
    the generator's :class:`~disenttalk.generate.retarget.PoseLimits` (1 when it is already
    within). Whatever comes out, ``Generator.landmarks`` draws it softly limited to those limits.
    References shorter than the audio are played forwards and backwards (no jumps).

    ``blinks``: the training corpus's real blinks on the generated eyes (along the bundle's blink
    direction in the eye dims, the eyes follow its closure curves, chosen by the seed; their other
    motion stays as generated): None (default) = when the bundle has them and the eyes are
    generated, True = required, False = the model's eyes only. Eye motion does not follow the audio,
    and on the demo budget the denoiser's own eyes blink at a fifth to a half of the truth's rate,
    in short dips; a reference's eyes blink as they did. ``blink_rate`` (blinks per second, up to
    :data:`MAX_BLINK_RATE`; None = the corpus's own rate) respaces the corpus blinks: the same
    closures, with the open spans between them stretched or shrunk (0 = no blinks). Blink rate
    is a trait of the person (people blink 0.1–0.5 times a second at rest), which neither the
    audio nor one photo shows.
    """

    lip_scale: float = 1.0
    eye_scale: float = 1.0
    global_scale: float = 1.0
    eyes: Any = "generate"  # "generate" | np.ndarray [T_ref, N]
    pose: Any = "still"  # "still" | np.ndarray [T_ref, 6]
    blinks: bool | None = None
    blink_rate: float | None = None
    pose_centre: str = "first"  # "first" | "mean"
    pose_scale: float | str = "fit"  # a number >= 0 | "fit"

    def __post_init__(self) -> None:
        if self.blink_rate is not None and not (isinstance(self.blink_rate, (int, float))
                                                and 0 <= self.blink_rate <= MAX_BLINK_RATE):
            raise ValueError(f"Controls.blink_rate must be 0..{MAX_BLINK_RATE} blinks per second, "
                             f"got {self.blink_rate!r}")
        for name in ("lip_scale", "eye_scale", "global_scale"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"Controls.{name} must be a finite number, got {value!r}")
        if isinstance(self.eyes, str):
            if self.eyes != "generate":
                raise ValueError("Controls.eyes must be 'generate' or an expression array [T_ref, N]")
        elif np.asarray(self.eyes).ndim != 2 or len(self.eyes) == 0:
            raise ValueError("Controls.eyes reference must be a non-empty array [T_ref, N]")
        if isinstance(self.pose, str):
            if self.pose != "still":
                raise ValueError("Controls.pose must be 'still' or a pose array [T_ref, 6]")
        elif np.asarray(self.pose).ndim != 2 or np.asarray(self.pose).shape[1] != POSE_DIMS \
                or len(self.pose) == 0:
            raise ValueError("Controls.pose reference must be a non-empty array [T_ref, 6]")
        if self.pose_centre not in POSE_CENTRES:
            raise ValueError(f"Controls.pose_centre must be one of {POSE_CENTRES}, got {self.pose_centre!r}")
        if self.pose_scale != "fit" and not (isinstance(self.pose_scale, (int, float))
                                             and math.isfinite(self.pose_scale) and self.pose_scale >= 0):
            raise ValueError(f"Controls.pose_scale must be 'fit' or a number >= 0, got {self.pose_scale!r}")

    def use_blinks(self, available: bool) -> bool:
        """Whether corpus blinks are used, for a bundle with or without them."""
        if self.blinks and not available:
            raise ValueError("blinks=True: this bundle has no blink model (trained before bundles "
                             "carried one)")
        if self.blinks is None:
            return available and isinstance(self.eyes, str)
        return bool(self.blinks)

    def region_scales(self, split: RegionSplit) -> np.ndarray:
        """Scale per expression dim [N]."""
        scale = np.ones(split.num_dims, dtype=np.float32)
        scale[list(split.lip)] = self.lip_scale
        scale[list(split.eye)] = self.eye_scale
        scale[list(split.global_)] = self.global_scale
        return scale

    def pose_at(self, frames: np.ndarray, limits: Any = None) -> np.ndarray:
        """Pose deviation [len(frames), 6] at absolute frame indices (see :func:`pose_deviation`):
        the reference's change from its ``pose_centre``, times ``pose_scale`` (``"fit"``: fitted
        to ``limits``, a :class:`~disenttalk.generate.retarget.PoseLimits`, default its defaults)."""
        if isinstance(self.pose, str):
            return np.zeros((len(frames), POSE_DIMS), dtype=np.float32)
        dev = self.pose_deviation()
        if self.pose_scale == "fit":
            from disenttalk.generate.retarget import fit_scale

            dev = dev * fit_scale(dev, limits)
        else:
            dev = dev * float(self.pose_scale)
        return dev[pingpong(len(dev), frames)].astype(np.float32)

    def pose_deviation(self) -> np.ndarray:
        """The reference pose's change from its ``pose_centre`` [T_ref, 6], unscaled."""
        pose = np.asarray(self.pose, dtype=np.float64)
        if self.pose_centre == "mean":
            from disenttalk.generate.retarget import mean_pose

            return pose_deviation(pose, mean_pose(pose))
        return pose_deviation(pose)


@dataclass
class Motion:
    """Generated face motion: expression [T,N] (parameter units), pose deviation [T,6].

    The pose is relative (see :func:`pose_deviation`): zeros keep the portrait's own pose. It is
    the deviation as asked for; ``Generator.landmarks`` draws it within the generator's
    ``pose_limits`` (:func:`~disenttalk.generate.retarget.limit_pose`).
    """

    expression: np.ndarray
    pose: np.ndarray
    fps: float = 25.0
    start: int = 0  # index of the first frame in the whole sequence (streamed chunks)

    def __post_init__(self) -> None:
        if self.expression.ndim != 2 or self.pose.shape != (len(self.expression), POSE_DIMS):
            raise ValueError(f"Motion: expression {self.expression.shape} and pose "
                             f"{self.pose.shape} must be [T,N] and [T,{POSE_DIMS}]")

    def __len__(self) -> int:
        return len(self.expression)

    @property
    def duration(self) -> float:
        """Seconds."""
        return len(self) / self.fps

    @classmethod
    def concat(cls, chunks: list[Motion]) -> Motion:
        """Join consecutive chunks (as yielded by ``Generator.stream``) into one Motion."""
        if not chunks:
            raise ValueError("Motion.concat needs at least one chunk")
        for a, b in zip(chunks, chunks[1:], strict=False):
            if b.start != a.start + len(a):
                raise ValueError(f"chunks are not consecutive: {a.start}+{len(a)} then {b.start}")
        return cls(np.concatenate([c.expression for c in chunks]),
                   np.concatenate([c.pose for c in chunks]), chunks[0].fps, chunks[0].start)


def pose_deviation(pose: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
    """Poses [T,6] (rotation vector, tx, ty, log s) → change from ``centre`` [6] (default: frame
    0's pose), free of image units.

    Rotation: R_t·R_c⁻¹ as a rotation vector (its components turn about the image's x, y, z axes:
    pitch, yaw, roll); translation: pixels divided by the centre's scale (face-size units); scale:
    log s_t − log s_c. :func:`compose_pose` applies it to another face.
    """
    from scipy.spatial.transform import Rotation

    pose = np.asarray(pose, dtype=np.float64)
    centre = pose[0] if centre is None else np.asarray(centre, dtype=np.float64)
    rot = Rotation.from_rotvec(pose[:, :3]) * Rotation.from_rotvec(centre[:3]).inv()
    shift = (pose[:, 3:5] - centre[3:5]) / np.exp(centre[5])
    return np.concatenate([rot.as_rotvec(), shift, pose[:, 5:6] - centre[5]], axis=1)


def chain_curves(curves: np.ndarray, frames: int, seed: int) -> np.ndarray:
    """Closure curves [M,L] (NaN past a curve's end) joined end to end in a seeded random order
    into one curve of ≥ ``frames`` [T]. Curves are whole clips, which start and end with the eyes
    open, and none is shortened, so the chain blinks as often per second as the corpus does."""
    rng = np.random.default_rng([int(seed), 0xB11])
    rows = [c[np.isfinite(c)] for c in np.asarray(curves, dtype=np.float32)]
    out, total = [], 0
    while total < frames:
        out.append(rows[rng.integers(len(rows))])
        total += len(out[-1])
    return np.concatenate(out).astype(np.float32)


def respace_blinks(curve: np.ndarray, fps: float, rate: float, min_gap_s: float = 0.3) -> np.ndarray:
    """A closure curve [T'] with the blinks (runs > 0) of ``curve`` [T], in order, at ``rate`` per
    second: every open span (before, between and after them) scaled by one factor, none shorter
    than ``min_gap_s`` (so rates near the ceiling come out somewhat lower). 0 → all open."""
    curve = np.asarray(curve, dtype=np.float32)
    edges = np.diff(np.concatenate([[0], (curve > 0).astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if rate <= 0 or len(starts) == 0:
        return np.zeros_like(curve)
    spans = np.diff(np.concatenate([[0], ends]))  # open frames then the blink, per blink
    lengths = ends - starts
    gaps = np.append(spans - lengths, len(curve) - ends[-1]).astype(np.float64)  # n + 1 open spans
    open_want = len(starts) * fps / rate - lengths.sum()
    gaps = np.maximum(gaps * (open_want / max(gaps.sum(), 1.0)), min_gap_s * fps)
    at = np.round(np.cumsum(gaps[:-1] + np.concatenate([[0], lengths[:-1]]))).astype(int)
    out = np.zeros(int(round(at[-1] + lengths[-1] + gaps[-1])), np.float32)
    for to, s, e in zip(at, starts, ends, strict=True):
        out[to:to + e - s] = curve[s:e]
    return out


def compose_pose(base: np.ndarray, deviation: np.ndarray) -> np.ndarray:
    """A base pose [6] moved by deviations [T,6] (the inverse of :func:`pose_deviation`)."""
    from scipy.spatial.transform import Rotation

    base = np.asarray(base, dtype=np.float64)
    dev = np.asarray(deviation, dtype=np.float64)
    rot = Rotation.from_rotvec(dev[:, :3]) * Rotation.from_rotvec(base[:3])
    shift = base[3:5] + dev[:, 3:5] * np.exp(base[5])
    return np.concatenate([rot.as_rotvec(), shift, base[5] + dev[:, 5:6]], axis=1)


def pingpong(length: int, frames: np.ndarray) -> np.ndarray:
    """Indices into a reference of ``length`` frames played forwards, backwards, forwards, …"""
    frames = np.asarray(frames, dtype=np.int64)
    if length == 1:
        return np.zeros_like(frames)
    k = frames % (2 * (length - 1))
    return np.where(k < length, k, 2 * (length - 1) - k)
