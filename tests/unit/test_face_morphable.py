"""Pose alignment, the morphable model and the region split (paper Eq. 1–2) on synthetic clips."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from disenttalk.face.editors import close_eyes, open_mouth
from disenttalk.face.morphable import MorphableModel
from disenttalk.face.pose import RIGID, apply_pose, estimate_pose, frontalise, normalise
from disenttalk.face.regions import RegionSplit, select_regions
from disenttalk.face.tracker import FaceTracker


@pytest.fixture(scope="module")
def face(astronaut) -> np.ndarray:
    with FaceTracker() as tracker:
        return tracker.track_image(astronaut).astype(np.float64)


def _zero_z_origin(lm: np.ndarray) -> np.ndarray:
    """MediaPipe's z has no fixed origin; poses put the rigid points' mean z at 0."""
    out = lm.copy()
    out[..., 2] -= lm[..., list(RIGID), 2].mean(-1)[..., None]
    return out


def make_clip(face, seed, t=30, mouth=True, blinks=True, head=True) -> np.ndarray:
    """A synthetic clip [t,478,3]: an identity variant of ``face`` talking, blinking, moving."""
    rng = np.random.default_rng(seed)
    base = face * (1.0 + 0.04 * rng.standard_normal(3))  # a different face shape
    clip = np.repeat(base[None], t, axis=0)
    if mouth:
        phase = rng.uniform(0, 2 * np.pi)
        clip = open_mouth(clip, 0.12 * (1 + np.sin(np.arange(t) / 2.0 + phase)))
    if blinks:
        start = int(rng.integers(2, t - 6))
        amount = np.zeros(t)
        amount[start:start + 4] = [0.5, 1.0, 1.0, 0.5]
        clip = np.stack([close_eyes(f, a) for f, a in zip(clip, amount, strict=True)])
    if head:
        rot = Rotation.from_rotvec(0.15 * rng.standard_normal((t, 3))).as_matrix()
        centre = clip.mean(1, keepdims=True)
        scale = np.exp(0.1 * rng.standard_normal((t, 1, 1)))
        shift = 20 * rng.standard_normal((t, 1, 3))
        clip = scale * np.einsum("tij,tnj->tni", rot, clip - centre) + centre + shift
    return clip


def test_pose_round_trip_and_recovers_a_known_rotation(face):
    canonical = frontalise(face)
    shapes, pose = normalise(face[None], canonical)
    np.testing.assert_allclose(apply_pose(shapes, pose), _zero_z_origin(face[None]), atol=1e-8)
    # Rotate and scale the face by a known amount: the pose difference is that rotation.
    turn = Rotation.from_rotvec([0.0, 0.3, 0.0])
    moved = 1.5 * turn.apply(face - face.mean(0)) + face.mean(0)
    p0, p1 = estimate_pose(np.stack([face, moved]), canonical)
    relative = Rotation.from_rotvec(p1[:3]) * Rotation.from_rotvec(p0[:3]).inv()
    assert np.allclose(relative.as_rotvec(), [0.0, 0.3, 0.0], atol=1e-6)
    assert p1[5] - p0[5] == pytest.approx(np.log(1.5), abs=1e-9)
    # Opening the mouth does not move the pose (only rigid points drive it).
    p2 = estimate_pose(open_mouth(face, 0.3), canonical)
    np.testing.assert_allclose(p2[[0, 1, 2, 5]], p0[[0, 1, 2, 5]], atol=2e-3)
    np.testing.assert_allclose(p2[3:5], p0[3:5], atol=0.05)  # pixels
    assert np.isnan(estimate_pose(np.full((478, 3), np.nan), canonical)).all()


@pytest.fixture(scope="module")
def corpus(face) -> list[np.ndarray]:
    return [make_clip(face, seed) for seed in range(6)]


@pytest.fixture(scope="module")
def model(corpus) -> MorphableModel:
    return MorphableModel.fit(corpus, n_expression=16)


def test_encode_decode_round_trip(model, corpus, face, tmp_path):
    assert model.n_expression == 16 and model.n_identity == 5
    # Synthetic motion spans only a few dimensions; the rest are zero-padded.
    assert 2 <= model.n_effective < 16 and np.all(model.expression_std[model.n_effective:] == 0)
    unseen = make_clip(face, seed=99)
    unseen[4] = np.nan
    expression, pose, identity = model.encode(unseen)
    assert expression.shape == (30, 16) and pose.shape == (30, 6) and identity.shape == (5,)
    assert np.isnan(expression[4]).all() and np.isfinite(np.delete(expression, 4, 0)).all()
    decoded = model.decode(expression, pose, identity)
    ok = np.isfinite(decoded).all(axis=(1, 2))
    assert ok.tolist() == [i != 4 for i in range(30)]
    # An unseen identity is only approximated by 5 identity dims; the motion is captured.
    size = np.linalg.norm(face[33] - face[263])
    error = np.abs(decoded[ok] - _zero_z_origin(unseen[ok])).max()
    assert error < 0.03 * size
    train_error = np.abs(model.decode(*model.encode(corpus[0])) - _zero_z_origin(corpus[0])).max()
    assert train_error < 1e-3 * size
    path = tmp_path / "mm.npz"
    model.save(path)
    again = MorphableModel.load(path)
    np.testing.assert_array_equal(again.encode(unseen)[0], expression)


def test_fit_rejects_empty_data():
    with pytest.raises(ValueError, match="no valid frames"):
        MorphableModel.fit([np.full((3, 478, 3), np.nan)])


def _moving_dims(model, clips) -> set[int]:
    codes = np.concatenate([model.encode(c)[0] for c in clips])
    std = codes.std(0)
    return {int(i) for i in np.flatnonzero(std > 0.05 * std.max())}


@pytest.mark.parametrize(("region", "mouth", "blinks"), [("lip", True, False), ("eye", False, True)])
def test_select_regions_finds_the_moving_region(face, region, mouth, blinks):
    clips = [make_clip(face, seed, mouth=mouth, blinks=blinks) for seed in range(4)]
    model = MorphableModel.fit(clips, n_expression=12)
    # Only one region moves, so every real dimension belongs to it: give it room for all.
    k = {"lip": 2, "eye": 2, region: model.n_effective}
    split = select_regions(model, clips, k_lip=k["lip"], k_eye=k["eye"])
    assert isinstance(split, RegionSplit) and split.num_dims == 12
    assert set(range(model.n_effective)) == set(split.indices(region))
    moving = _moving_dims(model, clips)
    assert moving and moving <= set(split.indices(region))
    assert len(split.scores["lip"]) == 12 and len(split.scores["eye"]) == 12


def test_select_regions_separates_mouth_and_eyes(model, corpus):
    split = select_regions(model, corpus, k_lip=4, k_eye=3)
    assert (len(split.lip), len(split.eye), len(split.global_)) == (4, 3, 9)
    lip, eye = np.array(split.scores["lip"]), np.array(split.scores["eye"])
    # The strongest lip dimension and the strongest eye dimension are distinct and land right.
    assert int(lip.argmax()) in split.lip and int(eye.argmax()) in split.eye
    assert lip.argmax() != eye.argmax()
    with pytest.raises(ValueError):
        select_regions(model, corpus, k_lip=10, k_eye=10)
    with pytest.raises(ValueError, match="normalise"):
        select_regions(model, corpus, normalise="zscore")


def test_detail_keeps_an_unseen_face_exact_under_its_own_expression():
    """decode(encode(face), detail(face)) reproduces a face the identity basis cannot represent."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(478, 3)) * 40 + 128
    clips = [base + rng.normal(size=(20, 478, 3)) * s for s in (0.5, 1.0, 1.5)]
    model = MorphableModel.fit(clips, n_expression=8)
    unseen = base + rng.normal(size=(478, 3)) * 3.0  # a different face
    expression, pose, identity = model.encode(unseen[None])
    plain = model.decode(expression, pose, identity)[0]
    exact = model.decode(expression, pose, identity, model.detail(unseen))[0]
    assert np.abs(plain[:, :2] - unseen[:, :2]).max() > 0.5  # the bases alone miss it
    np.testing.assert_allclose(exact[:, :2], unseen[:, :2], atol=1e-6)
