"""The morphable model and region split from per-shard sufficient statistics equal the direct fit."""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.face import stats
from disenttalk.face.morphable import _GPA_ITERATIONS, MorphableModel
from disenttalk.face.regions import select_regions
from tests.unit.test_face_morphable import make_clip

TOL = 1e-6  # relative, on bases (up to sign-free comparisons), stds, means and scores


@pytest.fixture(scope="module")
def face(astronaut) -> np.ndarray:
    from disenttalk.face.tracker import FaceTracker

    with FaceTracker() as tracker:
        return tracker.track_image(astronaut).astype(np.float64)


@pytest.fixture(scope="module")
def clips(face) -> list[np.ndarray]:
    out = [make_clip(face, seed, t=40) for seed in range(7)]
    out[0][3] = np.nan  # a lost frame
    out[2][:] = np.nan  # a clip with no valid frame at all (skipped by both fits)
    return out


def fit_from_shards(shards: list[list[np.ndarray]], n_expression: int) -> MorphableModel:
    """What workflows.fit does with Ray tasks, with plain loops: sums per shard, added up."""
    reference = stats.initial_reference(c for shard in shards for c in shard)
    for _ in range(_GPA_ITERATIONS):
        parts = [stats.clip_mean_sum(shard, reference) for shard in shards]
        reference = stats.procrustes_step(sum(p[0] for p in parts), sum(p[1] for p in parts))
    total = sum((stats.ShapeStats.of_clips(shard, reference) for shard in shards[1:]),
                stats.ShapeStats.of_clips(shards[0], reference))
    return MorphableModel.from_stats(total, n_expression=n_expression)


def test_statistics_fit_equals_the_direct_fit(clips):
    direct = MorphableModel.fit(clips, n_expression=12)
    shards = [clips[:3], clips[3:4], clips[4:]]
    streamed = fit_from_shards(shards, n_expression=12)
    np.testing.assert_allclose(streamed.mean, direct.mean, atol=TOL)
    np.testing.assert_allclose(streamed.expression_std, direct.expression_std, rtol=TOL, atol=TOL)
    np.testing.assert_allclose(streamed.identity_std, direct.identity_std, rtol=TOL, atol=TOL)
    assert streamed.n_effective == direct.n_effective and streamed.n_identity == direct.n_identity == 5
    # same axes, same deterministic signs
    np.testing.assert_allclose(streamed.expression_basis, direct.expression_basis, atol=1e-5)
    real = direct.identity_std > 0
    np.testing.assert_allclose(streamed.identity_basis[real], direct.identity_basis[real], atol=1e-5)


@pytest.mark.parametrize("normalise", ["sigma", "none"])
def test_region_statistics_give_select_regions_split(clips, normalise):
    model = MorphableModel.fit(clips, n_expression=12)
    usable = [c for c in clips if np.isfinite(c).all(axis=(1, 2)).any()]
    direct = select_regions(model, usable, k_lip=3, k_eye=2, normalise=normalise)
    parts = []
    for shard in (usable[:2], usable[2:]):
        part = stats.RegionStats(model.n_expression)
        for clip in shard:
            part.add_clip(model, clip)
        parts.append(part)
    split = (parts[0] + parts[1]).split(k_lip=3, k_eye=2, normalise=normalise)
    assert (split.lip, split.eye, split.global_) == (direct.lip, direct.eye, direct.global_)
    for region in ("lip", "eye"):
        np.testing.assert_allclose(split.scores[region], direct.scores[region], rtol=1e-6, atol=1e-9)


def test_statistics_of_different_references_do_not_add(clips):
    a = stats.ShapeStats.of_clips(clips[:1], stats.initial_reference(clips))
    b = stats.ShapeStats.of_clips(clips[1:2], stats.initial_reference(clips[1:]))
    with pytest.raises(ValueError, match="different references"):
        _ = a + b
