"""Semantic split of expression dimensions into lip / eye / global subspaces (paper Eq. 1–2)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from disenttalk.face.morphable import MorphableModel

REGIONS = ("lip", "eye", "global")


@dataclass(frozen=True)
class RegionSplit:
    """Expression-dimension indices per region; ``scores`` holds |Δ|/σ per dimension for lip and eye."""

    lip: tuple[int, ...]
    eye: tuple[int, ...]
    global_: tuple[int, ...]
    scores: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        dims = list(self.lip) + list(self.eye) + list(self.global_)
        if len(set(dims)) != len(dims):
            raise ValueError("RegionSplit: a dimension belongs to more than one region")
        if sorted(dims) != list(range(len(dims))):
            raise ValueError("RegionSplit: regions must partition 0..N-1")

    @property
    def num_dims(self) -> int:
        """N, the expression dimensionality."""
        return len(self.lip) + len(self.eye) + len(self.global_)

    def indices(self, region: str) -> tuple[int, ...]:
        """Dimension indices of ``region`` (one of ``lip``, ``eye``, ``global``)."""
        if region not in REGIONS:
            raise KeyError(f"unknown region {region!r}; expected one of {REGIONS}")
        return self.global_ if region == "global" else getattr(self, region)

    def to_dict(self) -> dict:
        """JSON-compatible dict."""
        return {
            "lip": list(self.lip),
            "eye": list(self.eye),
            "global": list(self.global_),
            "scores": {k: list(v) for k, v in self.scores.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> RegionSplit:
        """Inverse of :meth:`to_dict`."""
        return cls(
            lip=tuple(int(i) for i in data["lip"]),
            eye=tuple(int(i) for i in data["eye"]),
            global_=tuple(int(i) for i in data["global"]),
            scores={k: tuple(float(x) for x in v) for k, v in data.get("scores", {}).items()},
        )

    def save(self, path: str | Path) -> None:
        """Write JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> RegionSplit:
        """Read JSON written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def reselect(self, k_lip: int, k_eye: int) -> RegionSplit:
        """The split another K_lip / K_eye gives on this split's own scores (Eq. 2 again, no refit)."""
        if set(self.scores) != {"lip", "eye"}:
            raise ValueError("this split has no per-dim scores to select from (not made by select_regions)")
        return split_by_scores(self.scores, k_lip, k_eye)

    @classmethod
    def single(cls, num_dims: int) -> RegionSplit:
        """No disentanglement: one region (``lip``) holding every dim, no eye or global dims."""
        return cls(lip=tuple(range(num_dims)), eye=(), global_=())

    @classmethod
    def contiguous(cls, num_dims: int, k_lip: int, k_eye: int) -> RegionSplit:
        """A split with lip = first k_lip dims, eye = next k_eye (for tests and random-weight benchmarks)."""
        if k_lip + k_eye > num_dims:
            raise ValueError("k_lip + k_eye exceeds the number of dimensions")
        return cls(
            lip=tuple(range(k_lip)),
            eye=tuple(range(k_lip, k_lip + k_eye)),
            global_=tuple(range(k_lip + k_eye, num_dims)),
        )


def _edit_response(model: MorphableModel, clips: Sequence[np.ndarray], edit) -> np.ndarray:
    """Mean |Δ_i| [N] over all valid frames: expression of ``edit(clip)`` minus that of the clip."""
    total, frames = np.zeros(model.n_expression), 0
    for clip in clips:
        expression, _, identity = model.encode(clip)
        # Same identity for the edit, so what the edit changes lands in the expression (Eq. 1).
        edited, _, _ = model.encode(edit(np.asarray(clip, dtype=np.float64)), identity=identity)
        delta = np.abs(edited - expression)
        ok = np.isfinite(delta).all(-1)
        total += delta[ok].sum(0)
        frames += int(ok.sum())
    if frames == 0:
        raise ValueError("select_regions: no valid frames in the clips")
    return total / frames


def select_regions(
    model: MorphableModel,
    clips: Sequence[np.ndarray],
    k_lip: int = 13,
    k_eye: int = 8,
    normalise: str = "sigma",
) -> RegionSplit:
    """Lip / eye / global dimensions by |Δ_r^i| / σ_i (paper Eq. 1–2) over landmark clips [T,478,3].

    Δ_lip (Δ_eye) is the change of the expression code when the clip's lips (eyes) are closed
    by the geometric editors, aggregated as the mean of |Δ| over frames and clips; σ_i is the
    std of expression dimension i over the same clips. Each region takes its top-K dims; a dim
    wanted by both goes to the region where its score is larger and the other region takes its
    next-best dim instead (a greedy pass over all (score, region, dim) in descending order).

    ``normalise="none"`` scores by |Δ_i| alone. The expression basis is orthonormal, so |Δ_i| is
    the edit's displacement along dim i in shape units and dims are comparable without σ. Eq. 1
    assumes an editor whose output stays on the data manifold; a geometric editor's closed lips
    and eyes differ from tracked ones, and dividing by σ then favours low-variance (noise) dims
    over the dims that carry the talking and blinking (seen on re-tracked rendered clips).
    """
    if normalise not in ("sigma", "none"):
        raise ValueError(f"normalise must be 'sigma' or 'none', got {normalise!r}")
    from disenttalk.face.editors import close_eyes, close_lips

    n = model.n_expression
    check_sizes(n, k_lip, k_eye)
    codes = np.concatenate([model.encode(c)[0] for c in clips])
    sigma = np.nanstd(codes, axis=0)  # [N]
    # Dims that (numerically) never vary must not win by a division by ~0: floor σ relative to
    # the largest, and give zero-padded dims (σ = 0) a score of 0.
    floor = 1e-4 * max(float(sigma.max()), 1e-12)
    scores = {}
    for region, edit in (("lip", close_lips), ("eye", close_eyes)):
        delta = _edit_response(model, clips, edit)
        if normalise == "sigma":
            scores[region] = np.where(sigma > 0, delta / np.maximum(sigma, floor), 0.0)  # Eq. 1
        else:
            scores[region] = np.where(sigma > 0, delta, 0.0)

    return split_by_scores(scores, k_lip, k_eye)


def check_sizes(num_dims: int, k_lip: int, k_eye: int) -> None:
    """Raise a ValueError saying what is wrong when K_lip / K_eye do not fit N dims."""
    if k_lip < 1 or k_eye < 1:
        raise ValueError(f"K_lip = {k_lip}, K_eye = {k_eye}: each region needs at least one dim")
    if k_lip + k_eye > num_dims:
        raise ValueError(f"K_lip + K_eye = {k_lip} + {k_eye} = {k_lip + k_eye} exceeds the "
                         f"{num_dims} expression dims of the fitted model")


def split_by_scores(scores: dict[str, Sequence[float]], k_lip: int, k_eye: int) -> RegionSplit:
    """Eq. 2: each region takes its top-K dims by score; a dim wanted by both goes to the region
    where its score is larger and the other region takes its next-best dim instead (a greedy
    pass over all (score, region, dim) in descending order; ties: lip first, then lower index)."""
    n = len(scores["lip"])
    check_sizes(n, k_lip, k_eye)
    want = {"lip": k_lip, "eye": k_eye}
    chosen: dict[str, list[int]] = {"lip": [], "eye": []}
    taken: set[int] = set()
    candidates = [(-float(scores[r][i]), r != "lip", i, r) for r in chosen for i in range(n)]
    for _, _, dim, region in sorted(candidates):
        if dim not in taken and len(chosen[region]) < want[region]:
            chosen[region].append(dim)
            taken.add(dim)
    return RegionSplit(
        lip=tuple(sorted(chosen["lip"])),
        eye=tuple(sorted(chosen["eye"])),
        global_=tuple(i for i in range(n) if i not in taken),
        scores={r: tuple(float(x) for x in scores[r]) for r in ("lip", "eye")},
    )
