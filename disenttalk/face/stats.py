"""Sufficient statistics for fitting the morphable model and the region split shard by shard.

:meth:`MorphableModel.fit` and :func:`~disenttalk.face.regions.select_regions` take every clip
at once. Here the same quantities are sums over clips, so a corpus can be cut into shards, each
shard reduced to a fixed-size statistic where its clips live (a Ray task), and the statistics
added up: the memory of whoever adds them does not grow with the corpus.

* Generalised Procrustes (the model's mean shape): :func:`clip_mean_sum` per shard → the mean of
  the clips' pose-normalised mean shapes, re-frontalised (:func:`procrustes_step`).
* :class:`ShapeStats`: count, Σ of clip means and their scatter (the identity PCA), and the
  within-clip scatter of frames around their clip's mean (the expression PCA), D = 478·3.
  :meth:`MorphableModel.from_stats` takes the PCAs from these covariances.
* :class:`RegionStats`: per expression dim, Σ code, Σ code² and Σ |Δ| of the lip / eye edits
  (Eq. 1) over valid frames; :meth:`RegionStats.split` scores and picks dims as
  ``select_regions`` does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from disenttalk.face.pose import frontalise, normalise


def valid_frames(clip: np.ndarray) -> np.ndarray:
    """The frames [T',478,3] (float64) of a clip whose landmarks are all finite."""
    clip = np.asarray(clip, dtype=np.float64)
    return clip[np.isfinite(clip).all(axis=(1, 2))]


def initial_reference(clips: Iterable[np.ndarray]) -> np.ndarray:
    """The first valid frame of the first clip that has one, frontalised: where
    :meth:`MorphableModel.fit` starts its Procrustes iterations."""
    for clip in clips:
        frames = valid_frames(clip)
        if len(frames):
            return frontalise(frames[0])
    raise ValueError("no valid frames in the clips")


def clip_mean_sum(clips: Iterable[np.ndarray], reference: np.ndarray) -> tuple[np.ndarray, int]:
    """Σ over clips of the mean shape [478,3] of the clip's frames aligned to ``reference``, and
    the number of clips with valid frames."""
    total, count = np.zeros_like(reference, dtype=np.float64), 0
    for clip in clips:
        frames = valid_frames(clip)
        if len(frames):
            total += normalise(frames, reference)[0].mean(0)
            count += 1
    return total, count


def procrustes_step(total: np.ndarray, count: int) -> np.ndarray:
    """The next Procrustes reference from the summed clip means of all shards."""
    if count == 0:
        raise ValueError("no valid frames in the clips")
    return frontalise(total / count)


@dataclass
class ShapeStats:
    """Second-order statistics of pose-normalised clips (flattened shapes, D = 478·3).

    Clip means are stored relative to ``shift`` (the Procrustes reference), which keeps the
    scatter of clip means free of cancellation.
    """

    shift: np.ndarray  # [D] the reference every clip was aligned to
    clips: int = 0
    frames: int = 0
    mean_sum: np.ndarray | None = None  # Σ_c (m_c − shift) [D]
    mean_scatter: np.ndarray | None = None  # Σ_c (m_c − shift)(m_c − shift)ᵀ [D,D]
    within_scatter: np.ndarray | None = None  # Σ_c Σ_t (y_t − m_c)(y_t − m_c)ᵀ [D,D]

    @classmethod
    def of_clips(cls, clips: Iterable[np.ndarray], reference: np.ndarray) -> ShapeStats:
        """Statistics of ``clips`` [T,478,3] aligned to ``reference`` [478,3] (NaN frames skipped)."""
        shift = np.asarray(reference, dtype=np.float64).reshape(-1)
        d = shift.size
        stats = cls(shift=shift, mean_sum=np.zeros(d), mean_scatter=np.zeros((d, d)),
                    within_scatter=np.zeros((d, d)))
        for clip in clips:
            frames = valid_frames(clip)
            if not len(frames):
                continue
            shapes = normalise(frames, reference)[0].reshape(len(frames), -1)  # [T',D]
            mean = shapes.mean(0)
            dev = shapes - mean
            rel = mean - shift
            stats.clips += 1
            stats.frames += len(frames)
            stats.mean_sum += rel
            stats.mean_scatter += np.outer(rel, rel)
            stats.within_scatter += dev.T @ dev
        return stats

    def __add__(self, other: ShapeStats) -> ShapeStats:
        if not np.array_equal(self.shift, other.shift):
            raise ValueError("ShapeStats of different references cannot be added")
        return ShapeStats(self.shift, self.clips + other.clips, self.frames + other.frames,
                          self.mean_sum + other.mean_sum, self.mean_scatter + other.mean_scatter,
                          self.within_scatter + other.within_scatter)

    @property
    def centre(self) -> np.ndarray:
        """The mean of the clip means [D]: the model's mean shape."""
        return self.shift + self.mean_sum / self.clips

    def identity_covariance(self) -> np.ndarray:
        """Covariance [D,D] of the clip means (rows = clips, as the direct fit's PCA sees them)."""
        mu = self.mean_sum / self.clips
        return self.mean_scatter / self.clips - np.outer(mu, mu)

    def expression_covariance(self) -> np.ndarray:
        """Covariance [D,D] of frames around their clip's mean (rows = frames)."""
        return self.within_scatter / max(self.frames, 1)


def edit_delta_sum(model, clip: np.ndarray, edit) -> tuple[np.ndarray, int]:
    """Σ over valid frames of |expression(edit(clip)) − expression(clip)| [N], and the frame count
    (the clip's identity kept for the edit, so the change lands in the expression: Eq. 1)."""
    expression, _, identity = model.encode(clip)
    edited, _, _ = model.encode(edit(np.asarray(clip, dtype=np.float64)), identity=identity)
    delta = np.abs(edited - expression)
    ok = np.isfinite(delta).all(-1)
    return delta[ok].sum(0), int(ok.sum())


@dataclass
class RegionStats:
    """Per expression dim: Σ code, Σ code², valid frames; Σ |Δ| and frames for each edit."""

    n: int
    frames: int = 0
    code_sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    code_sq_sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    delta_sum: dict[str, np.ndarray] = field(default_factory=dict)
    delta_frames: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.code_sum = np.zeros(self.n) if self.code_sum is None else self.code_sum
        self.code_sq_sum = np.zeros(self.n) if self.code_sq_sum is None else self.code_sq_sum
        for region in ("lip", "eye"):
            self.delta_sum.setdefault(region, np.zeros(self.n))
            self.delta_frames.setdefault(region, 0)

    def add_clip(self, model, clip: np.ndarray, expression: np.ndarray | None = None) -> None:
        """Add one clip [T,478,3] (``expression``: its code if already encoded)."""
        from disenttalk.face.editors import close_eyes, close_lips

        codes = model.encode(clip)[0] if expression is None else expression
        ok = np.isfinite(codes).all(-1)
        self.frames += int(ok.sum())
        self.code_sum += codes[ok].sum(0)
        self.code_sq_sum += (codes[ok] ** 2).sum(0)
        for region, edit in (("lip", close_lips), ("eye", close_eyes)):
            total, frames = edit_delta_sum(model, clip, edit)
            self.delta_sum[region] += total
            self.delta_frames[region] += frames

    def __add__(self, other: RegionStats) -> RegionStats:
        return RegionStats(
            self.n, self.frames + other.frames, self.code_sum + other.code_sum,
            self.code_sq_sum + other.code_sq_sum,
            {r: self.delta_sum[r] + other.delta_sum[r] for r in self.delta_sum},
            {r: self.delta_frames[r] + other.delta_frames[r] for r in self.delta_frames})

    def sigma(self) -> np.ndarray:
        """Std of each expression dim over all valid frames [N] (population, as ``np.nanstd``)."""
        mean = self.code_sum / max(self.frames, 1)
        return np.sqrt(np.maximum(self.code_sq_sum / max(self.frames, 1) - mean**2, 0.0))

    def scores(self, normalise: str = "sigma") -> dict[str, np.ndarray]:
        """|Δ_r^i| / σ_i (Eq. 1) per region, or |Δ_r^i| for ``normalise="none"``; 0 where σ = 0."""
        if normalise not in ("sigma", "none"):
            raise ValueError(f"normalise must be 'sigma' or 'none', got {normalise!r}")
        sigma = self.sigma()
        floor = 1e-4 * max(float(sigma.max()), 1e-12)  # as select_regions: no win by ÷ ~0
        out = {}
        for region in ("lip", "eye"):
            if self.delta_frames[region] == 0:
                raise ValueError("no valid frames in the clips")
            delta = self.delta_sum[region] / self.delta_frames[region]
            scaled = delta / np.maximum(sigma, floor) if normalise == "sigma" else delta
            out[region] = np.where(sigma > 0, scaled, 0.0)
        return out

    def split(self, k_lip: int = 13, k_eye: int = 8, normalise: str = "sigma"):
        """The :class:`~disenttalk.face.regions.RegionSplit` that ``select_regions`` picks from
        these scores (top-K per region, a dim wanted by both going where it scores higher)."""
        from disenttalk.face.regions import split_by_scores

        return split_by_scores(self.scores(normalise), k_lip, k_eye)
