"""A linear morphable model of FaceMesh landmarks: pose + identity + expression.

The stand-in for the paper's BFM 3DMM (Sec. III-A): a frame's pose-normalised shape is

    Y_t = M + B_idᵀ · id + B_expᵀ · E_t

with M the mean shape [478·3], B_id [K,478·3] an orthonormal identity basis learnt from the
between-clip variation of per-clip mean shapes, and B_exp [N,478·3] an orthonormal expression
basis, the PCA of within-clip deviations from the clip mean (N = 64 by default, as the paper's
64 expression coefficients). Coefficients are in canonical-shape units (see ``pose``).
When the data span fewer than N dimensions the basis is zero-padded: the extra coefficients
are always 0 and ``n_effective`` says how many are real.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg

from disenttalk.face.pose import apply_pose, frontalise, normalise

if TYPE_CHECKING:
    from disenttalk.face.stats import ShapeStats

_GPA_ITERATIONS = 3  # generalised Procrustes converges in two or three passes


def _pca(deviations: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-n principal axes [n,D] (zero rows past the data's rank) and their std [n]."""
    rows, d = deviations.shape
    if rows == 0 or n == 0:
        return np.zeros((n, d)), np.zeros(n)
    if rows < d:  # few frames: the thin SVD of the data is cheapest
        _, sv, vt = np.linalg.svd(deviations, full_matrices=False)
        var, vec = sv**2 / rows, vt.T
    else:  # many frames: only the top-n eigenpairs of the [D,D] covariance
        return _pca_of_covariance(deviations.T @ deviations / rows, n)
    return _top_axes(var, vec, n, d)


def _pca_of_covariance(cov: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_pca` from the covariance [D,D] of the deviations instead of the deviations."""
    d = cov.shape[0]
    if n == 0:
        return np.zeros((0, d)), np.zeros(0)
    top = min(n, d)
    var, vec = scipy.linalg.eigh(cov, subset_by_index=[d - top, d - 1])
    return _top_axes(var[::-1], vec[:, ::-1], n, d)


def _top_axes(var: np.ndarray, vec: np.ndarray, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Variances (descending) and axes [D,·] → n axes [n,D] with their std, past the rank zero."""
    rank = int((var > 1e-10 * max(var[0], 1e-30)).sum())
    k = min(n, rank)
    basis = np.zeros((n, d))
    basis[:k] = vec[:, :k].T
    # A deterministic sign per axis (largest |loading| positive), so refits agree.
    flip = np.sign(basis[np.arange(n), np.abs(basis).argmax(1)])
    basis *= np.where(flip == 0, 1.0, flip)[:, None]
    std = np.zeros(n)
    std[:k] = np.sqrt(np.maximum(var[:k], 0.0))
    return basis, std


@dataclass
class MorphableModel:
    """Mean shape [478,3], identity basis [K,1434], expression basis [N,1434] and their stds."""

    mean: np.ndarray
    identity_basis: np.ndarray
    expression_basis: np.ndarray
    expression_std: np.ndarray
    identity_std: np.ndarray
    n_effective: int

    @property
    def n_expression(self) -> int:
        """N, the number of expression coefficients."""
        return self.expression_basis.shape[0]

    @property
    def n_identity(self) -> int:
        """K, the number of identity coefficients."""
        return self.identity_basis.shape[0]

    @classmethod
    def fit(
        cls, clips: Sequence[np.ndarray], n_expression: int = 64, n_identity: int | None = None
    ) -> MorphableModel:
        """Learn the model from landmark clips [T,478,3] (NaN frames are skipped)."""
        clips = [np.asarray(c, dtype=np.float64) for c in clips]
        valid = [c[np.isfinite(c).all(axis=(1, 2))] for c in clips]
        valid = [c for c in valid if len(c)]
        if not valid:
            raise ValueError("MorphableModel.fit: no valid frames in the clips")
        # Generalised Procrustes: align everything to the current mean, re-estimate the mean.
        mean = frontalise(valid[0][0])
        for _ in range(_GPA_ITERATIONS):
            shapes = [normalise(c, mean)[0] for c in valid]
            mean = frontalise(np.mean([s.mean(0) for s in shapes], axis=0))
        shapes = [normalise(c, mean)[0].reshape(len(c), -1) for c in valid]
        clip_means = np.stack([s.mean(0) for s in shapes])  # [C,1434]
        centre = clip_means.mean(0)
        mean = centre.reshape(-1, 3)

        k = len(valid) - 1 if n_identity is None else n_identity
        identity_basis, identity_std = _pca(clip_means - centre, k)
        within = np.concatenate([s - m for s, m in zip(shapes, clip_means, strict=True)])
        expression_basis, expression_std = _pca(within, n_expression)
        return cls(
            mean=mean,
            identity_basis=identity_basis,
            expression_basis=expression_basis,
            expression_std=expression_std,
            identity_std=identity_std,
            n_effective=int((expression_std > 0).sum()),
        )

    @classmethod
    def from_stats(cls, stats: ShapeStats, n_expression: int = 64,
                   n_identity: int | None = None) -> MorphableModel:
        """The model :meth:`fit` learns, from the summed statistics of the clips
        (:class:`~disenttalk.face.stats.ShapeStats`, aligned to the Procrustes reference)."""
        if stats.clips == 0:
            raise ValueError("MorphableModel.from_stats: no valid frames in the clips")
        k = stats.clips - 1 if n_identity is None else n_identity
        identity_basis, identity_std = _pca_of_covariance(stats.identity_covariance(), k)
        expression_basis, expression_std = _pca_of_covariance(stats.expression_covariance(), n_expression)
        return cls(
            mean=stats.centre.reshape(-1, 3),
            identity_basis=identity_basis,
            expression_basis=expression_basis,
            expression_std=expression_std,
            identity_std=identity_std,
            n_effective=int((expression_std > 0).sum()),
        )

    def encode(
        self, landmarks: np.ndarray, identity: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Clip [T,478,3] → expression [T,N], pose [T,6], identity [K] (NaN frames → NaN rows).

        The identity comes from the clip's mean shape unless given; pass the original clip's
        identity when encoding an edit of it, so the edit shows up in the expression only.
        """
        shapes, pose = normalise(landmarks, self.mean)
        flat = shapes.reshape(len(shapes), -1) - self.mean.reshape(-1)  # [T,1434]
        ok = np.isfinite(flat).all(-1)
        if identity is None:
            if not ok.any():
                raise ValueError("MorphableModel.encode: no valid frame to estimate identity from")
            identity = self.identity_basis @ flat[ok].mean(0)
        residual = flat - identity @ self.identity_basis
        expression = residual @ self.expression_basis.T
        return expression, pose, np.asarray(identity, dtype=np.float64)

    def decode(
        self,
        expression: np.ndarray,
        pose: np.ndarray,
        identity: np.ndarray,
        detail: np.ndarray | None = None,
    ) -> np.ndarray:
        """Expression [T,N], pose [T,6], identity [K] → landmarks [T,478,3] in image pixels.

        ``detail`` [478,3] (from :meth:`detail`) adds back what the bases cannot represent of
        one particular face, so a portrait keeps its exact shape under new expressions.
        """
        expression = np.asarray(expression, dtype=np.float64)
        flat = (
            self.mean.reshape(-1)
            + np.asarray(identity, dtype=np.float64) @ self.identity_basis
            + expression @ self.expression_basis
        )
        if detail is not None:
            flat = flat + np.asarray(detail, dtype=np.float64).reshape(-1)
        return apply_pose(flat.reshape(*expression.shape[:-1], -1, 3), pose)

    def detail(self, landmarks: np.ndarray) -> np.ndarray:
        """The pose-normalised part [478,3] of one face [478,3] that identity + expression miss."""
        expression, pose, identity = self.encode(np.asarray(landmarks)[None])
        shape, _ = normalise(np.asarray(landmarks)[None], self.mean)
        modelled = (
            self.mean.reshape(-1) + identity @ self.identity_basis + expression[0] @ self.expression_basis
        )
        return (shape[0].reshape(-1) - modelled).reshape(-1, 3)

    def save(self, path: str | Path) -> None:
        """Write the arrays to an ``.npz`` file."""
        np.savez(
            path,
            mean=self.mean,
            identity_basis=self.identity_basis,
            expression_basis=self.expression_basis,
            expression_std=self.expression_std,
            identity_std=self.identity_std,
            n_effective=np.int64(self.n_effective),
        )

    @classmethod
    def load(cls, path: str | Path) -> MorphableModel:
        """Read a model written by :meth:`save`."""
        with np.load(path) as data:
            return cls(
                mean=data["mean"],
                identity_basis=data["identity_basis"],
                expression_basis=data["expression_basis"],
                expression_std=data["expression_std"],
                identity_std=data["identity_std"],
                n_effective=int(data["n_effective"]),
            )
