"""Head pose retargeting: the warp renderer's plausible range is measured from its own field, and
any head motion (a reference video's, the model's) is bent softly into it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from disenttalk.generate import Controls, Motion
from disenttalk.generate.retarget import (
    AXES,
    PoseLimits,
    fit_scale,
    limit_pose,
    mean_pose,
    pose_range,
    posed_landmarks,
    soft_limit,
    warp_strain,
)
from tests.unit.test_generate import SR, make_gen, speech_like
from tests.unit.test_generate import bundle as bundle  # noqa: F401  (fixtures used below)
from tests.unit.test_generate import face as face  # noqa: F401


def wandering(frames: int, degrees: float, seed: int = 0) -> np.ndarray:
    """A smooth head motion [T,6] that turns up to about ±``degrees`` and shifts up to ±0.5 face."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None] / 25.0
    freq, phase = rng.uniform(0.1, 0.6, (1, 6)), rng.uniform(0, 2 * np.pi, (1, 6))
    amp = np.r_[np.deg2rad([degrees] * 3), 0.5, 0.5, 0.2]
    return amp * np.sin(2 * np.pi * freq * t + phase)


@pytest.fixture(scope="module")
def astronaut_portrait(astronaut):
    from disenttalk.face.portrait import prepare_portrait

    portrait = prepare_portrait(astronaut, size=256)
    return portrait.crop, portrait.landmarks


def test_soft_limit_passes_small_values_bends_large_ones_below_the_limit():
    x = np.linspace(-20, 20, 4001)
    y = soft_limit(x, 4.0, knee=0.5)
    small = np.abs(x) <= 2.0
    assert np.array_equal(y[small], x[small])  # within the knee: unchanged
    assert np.all(np.abs(y) < 4.0) and np.abs(y).max() > 3.9  # nears the limit, does not reach it
    assert np.allclose(y, -soft_limit(-x, 4.0, 0.5))  # odd
    slope = np.diff(y) / np.diff(x)
    assert np.all(slope > 0) and np.all(slope <= 1 + 1e-9)  # monotone, never steeper than the input
    assert np.abs(np.diff(slope)).max() < 1e-2  # no kink at the knee
    assert np.allclose(soft_limit(x, 4.0, knee=0.0), 4.0 * np.tanh(x / 4.0))


def test_limited_pose_stays_within_the_limits_and_moves_no_faster_than_its_input():
    limits = PoseLimits()
    dev = wandering(500, degrees=40.0)
    out = limit_pose(dev, limits)
    assert np.all(np.abs(out) <= limits.bounds())  # (tanh rounds to 1 far beyond the limit)
    # per axis, no frame-to-frame step larger than the input's at that frame
    assert np.all(np.abs(np.diff(out, axis=0)) <= np.abs(np.diff(dev, axis=0)) + 1e-12)
    # a small motion (within half of every limit) passes unchanged
    small = 0.45 * limits.bounds() * np.sin(np.linspace(0, 6, 200))[:, None]
    assert np.array_equal(limit_pose(small, limits), small)
    assert np.array_equal(limit_pose(dev, PoseLimits(enabled=False)), dev)
    with pytest.raises(ValueError):
        PoseLimits(yaw=-1.0)


def test_fit_scale_brings_a_large_reference_within_the_limits_and_leaves_a_small_one():
    limits = PoseLimits()
    small = 0.8 * limits.bounds() * np.sin(np.linspace(0, 6, 300))[:, None]
    assert np.array_equal(fit_scale(small, limits), np.ones(6))
    large = wandering(1000, degrees=25.0, seed=3)
    scaled = large * fit_scale(large, limits)
    peak = np.quantile(np.abs(scaled), limits.fit_quantile, axis=0)
    assert np.allclose(peak, np.minimum(limits.bounds(), np.quantile(np.abs(large), 0.98, axis=0)))
    assert np.array_equal(fit_scale(large, PoseLimits(enabled=False)), np.ones(6))


def test_reference_pose_is_taken_from_its_first_frame_or_its_mean_and_fitted_by_default(bundle):
    rng = np.random.default_rng(5)
    centre = np.array([0.1, -0.3, 0.05, 120.0, 130.0, np.log(60.0)])
    ref = centre + np.c_[np.deg2rad(20) * rng.standard_normal((80, 3)), 30 * rng.standard_normal((80, 2)),
                         0.05 * rng.standard_normal((80, 1))]
    frames = np.arange(80)
    first = Controls(pose=ref, pose_scale=1.0).pose_at(frames)
    assert np.allclose(first[0], 0, atol=1e-6) and not np.allclose(first[1], 0)
    mean = Controls(pose=ref, pose_centre="mean", pose_scale=1.0).pose_at(frames)
    assert np.allclose(mean_pose(mean.astype(np.float64)), 0, atol=1e-3)  # centred on its mean
    half = Controls(pose=ref, pose_scale=0.5).pose_at(frames)
    assert np.allclose(half, 0.5 * first, atol=1e-6)
    fitted = Controls(pose=ref).pose_at(frames, PoseLimits())
    assert np.allclose(np.quantile(np.abs(fitted), 0.98, axis=0)[:3], PoseLimits().bounds()[:3], rtol=1e-3)
    # the generator fits with its own limits and draws the motion within them
    wider = PoseLimits(yaw=6.0)
    gen = make_gen(bundle, window=30, prefix=8, pose_limits=wider)
    m = gen.motion(speech_like(2.0), SR, steps=2, controls=Controls(pose=ref))  # 50 frames
    np.testing.assert_allclose(m.pose, Controls(pose=ref).pose_at(np.arange(50), wider), atol=1e-6)
    assert not np.allclose(m.pose, Controls(pose=ref).pose_at(np.arange(50)), atol=1e-3)
    for bad in (dict(pose_centre="median"), dict(pose_scale=-1.0), dict(pose_scale="auto")):
        with pytest.raises(ValueError):
            Controls(pose=ref, **bad)


def test_generator_draws_the_pose_as_posed_landmarks_do_limited(bundle, face):
    """Generator.landmarks of a motion that keeps the portrait's expression is the portrait's own
    landmarks moved by the softly limited pose: the renderer never gets more than the limits."""
    portrait, lm, morphable = face
    dev = wandering(40, degrees=30.0, seed=1)
    limits = PoseLimits()
    for pose_limits, expected in ((PoseLimits(enabled=False), dev), (limits, limit_pose(dev, limits))):
        gen = make_gen(dataclasses.replace(bundle, morphable=morphable), motion_reference="relative",
                       pose_limits=pose_limits)
        rest = gen.portrait_rest(lm)
        motion = Motion(np.repeat(rest[None], len(dev), 0), dev.astype(np.float32))
        drawn = gen.landmarks(motion, lm, rest=rest)
        posed = posed_landmarks(lm, expected, canonical=morphable.mean)
        np.testing.assert_allclose(drawn[..., :2], posed[..., :2], atol=1e-2)


def test_warp_strain_finds_the_fold_of_a_large_turn(astronaut_portrait):
    from disenttalk.render.renderer import WarpRenderer

    crop, lm = astronaut_portrait
    renderer = WarpRenderer(crop, lm)
    dev = np.zeros((3, 6))
    dev[1:, AXES.index("yaw")] = np.deg2rad([2.0, 30.0])
    strain = warp_strain(renderer, posed_landmarks(lm, dev))
    assert strain.bad[0] == 0 and strain.min_det[0] == pytest.approx(1.0, abs=1e-3)
    assert list(strain.plausible()) == [True, True, False]
    assert strain.min_det[2] < 0  # folded: the far cheek is drawn over itself
    reach = pose_range(crop, lm, axes=("yaw", "roll"), renderer=renderer)
    assert 2.0 <= -reach["yaw"][0] <= 10.0 and 2.0 <= reach["yaw"][1] <= 10.0
    assert reach["roll"][1] > reach["yaw"][1]  # an in-plane tilt is a 2D motion: it goes further


@pytest.mark.parametrize("name", ["audrey", "cage", "franck", "grace_hopper", "astronaut"])
def test_default_limits_hold_on_real_photos(name, astronaut):
    """``disenttalk bench pose`` measured these photos; the default limits are within every range."""
    from disenttalk.face.portrait import prepare_portrait
    from disenttalk.render.renderer import WarpRenderer
    from tests.photos import load

    portrait = prepare_portrait(astronaut if name == "astronaut" else load(name), size=256)
    renderer = WarpRenderer(portrait.crop, portrait.landmarks)
    bounds = PoseLimits().bounds()
    dev = np.zeros((12, 6))
    for axis in range(6):
        dev[2 * axis:2 * axis + 2, axis] = [-bounds[axis], bounds[axis]]
    strain = warp_strain(renderer, posed_landmarks(portrait.landmarks, dev))
    assert strain.plausible().all(), dict(zip([f"{a}{s}" for a in AXES for s in "-+"], strain.bad.round(4),
                                               strict=True))


def test_a_real_talking_video_is_drawn_without_folds(bundle, astronaut_portrait):
    """franck's talking video at its largest head turns (150-165 s: up to 24° of yaw, 18° of pitch,
    ±17° of roll, half a face of shift): the raw motion folds or smears the photo on many frames;
    retargeted (mean centre, fitted scale, soft limits) on none, and moving no faster."""
    from disenttalk import media
    from disenttalk.face.morphable import MorphableModel
    from disenttalk.face.tracker import FaceTracker
    from disenttalk.render.renderer import WarpRenderer
    from tests.photos import video_path

    stream = media.FrameStream(video_path("franck_talk"), fps=25.0)
    with FaceTracker() as tracker:
        tracks = tracker.track(stream.read(150 * 25, 165 * 25))
    assert tracks.valid.mean() > 0.95
    clip = tracks.landmarks[tracks.valid]
    _, pose, _ = MorphableModel.fit([clip], n_expression=8).encode(clip)
    crop, lm = astronaut_portrait
    renderer = WarpRenderer(crop, lm)
    raw = Controls(pose=pose, pose_centre="mean", pose_scale=1.0).pose_at(np.arange(len(pose)))
    assert np.rad2deg(np.abs(raw[:, 1])).max() > 15  # the video does turn its head
    retargeted = limit_pose(Controls(pose=pose, pose_centre="mean").pose_at(np.arange(len(pose))))
    before = warp_strain(renderer, posed_landmarks(lm, raw))
    after = warp_strain(renderer, posed_landmarks(lm, retargeted))
    print('implausible frames before / after:', (~before.plausible()).mean(), (~after.plausible()).mean())
    assert (~before.plausible()).mean() > 0.2
    assert after.plausible().all(), after.bad.max()
    assert np.all(np.abs(retargeted) < PoseLimits().bounds())
    assert np.all(np.abs(np.diff(retargeted, axis=0)).max(0) <= np.abs(np.diff(raw, axis=0)).max(0) + 1e-6)


def test_a_reference_where_the_face_is_lost_keeps_its_timing():
    """Frames without a face are filled in between their neighbours, not dropped (a dropped span
    would make the head jump)."""
    from workflows.generate import interpolate_missing

    valid = np.array([False, True, True, False, False, True, False])
    seen = np.array([[1.0, 10.0], [2.0, 20.0], [5.0, 50.0]])
    out = interpolate_missing(seen, valid)
    np.testing.assert_allclose(out[:, 0], [1, 1, 2, 3, 4, 5, 5])
    np.testing.assert_allclose(out[:, 1], 10 * out[:, 0])
