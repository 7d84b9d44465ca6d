"""Evaluation metrics with known answers: LMD, image metrics, CPBD, blink rate, sync confidence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.filters import gaussian
from skimage.transform import resize

from disenttalk.face import topology
from disenttalk.metrics import baselines, image, landmarks, sync

# -- landmarks --------------------------------------------------------------------------------


def face_landmarks(t: int, seed: int = 0) -> np.ndarray:
    """Random landmarks [T,478,3] with the outer eye corners 100 px apart (inter-ocular = 100)."""
    rng = np.random.default_rng(seed)
    lm = rng.uniform(50, 250, size=(1, topology.NUM_LANDMARKS, 3)).repeat(t, 0)
    lm[:, topology.RIGHT_EYE_OUTER, :2] = (100.0, 120.0)
    lm[:, topology.LEFT_EYE_OUTER, :2] = (200.0, 120.0)
    lm[:, list(topology.LIPS)] += rng.normal(0, 2.0, size=(t, len(topology.LIPS), 3))  # speech
    return lm


def similarity(lm: np.ndarray, angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    out = lm.copy()
    out[..., :2] = scale * lm[..., :2] @ np.array([[c, s], [-s, c]]) + np.array(shift)
    return out


def test_lmd_identical_is_zero():
    lm = face_landmarks(10)
    assert landmarks.lmd(lm, lm) == pytest.approx(0.0, abs=1e-9)


def test_lmd_ignores_pose_and_framing():
    lm = face_landmarks(10)
    moved = similarity(lm, angle=0.3, scale=1.7, shift=(40.0, -25.0))
    assert landmarks.lmd(moved, lm) == pytest.approx(0.0, abs=1e-9)


def test_lmd_of_known_offset_is_the_offset_in_inter_ocular_units():
    lm = face_landmarks(10)
    test = lm.copy()
    test[:, list(topology.LIPS), 1] += 5.0  # mouth 5 px lower, stable points untouched
    # then a different head pose and scale for the whole test face
    test = similarity(test, angle=-0.2, scale=0.5, shift=(10.0, 3.0))
    assert landmarks.lmd(test, lm) == pytest.approx(5.0 / 100.0, rel=1e-9)


def test_lmd_skips_frames_without_a_face():
    lm = face_landmarks(6)
    test = lm.copy()
    test[2] = np.nan
    per_frame = landmarks.lmd_per_frame(test, lm)
    assert np.isnan(per_frame[2]) and np.allclose(np.delete(per_frame, 2), 0.0, atol=1e-9)
    assert landmarks.lmd(test, lm) == pytest.approx(0.0, abs=1e-9)


def test_landmark_change_of_constant_velocity():
    lm = face_landmarks(5)
    lm[:] = lm[0]
    lm[..., 0] += 3.0 * np.arange(5)[:, None]  # whole face moves 3 px per frame
    assert np.allclose(landmarks.landmark_change(lm), 0.03)
    assert np.allclose(landmarks.landmark_change(baselines.still(lm)), 0.0)


def ear_face(ear_curve: np.ndarray) -> np.ndarray:
    """Landmarks whose eye aspect ratio (both eyes) follows ``ear_curve`` [T]."""
    t = len(ear_curve)
    lm = np.zeros((t, topology.NUM_LANDMARKS, 3))
    for p1, p2, p3, p4, p5, p6 in (topology.RIGHT_EYE_EAR, topology.LEFT_EYE_EAR):
        lm[:, p1, 0], lm[:, p4, 0] = 0.0, 30.0  # corners 30 px apart
        lm[:, p2, 0] = lm[:, p6, 0] = 10.0
        lm[:, p3, 0] = lm[:, p5, 0] = 20.0
        lm[:, p2, 1] = lm[:, p3, 1] = -15.0 * ear_curve  # lid gap = 30 × EAR
        lm[:, p6, 1] = lm[:, p5, 1] = 15.0 * ear_curve
    lm[:, topology.RIGHT_EYE_OUTER, 0] -= 40.0  # the two eyes do not coincide
    return lm


def test_blink_rate_of_a_synthetic_ear_curve():
    fps, seconds = 25, 8
    ear = np.full(fps * seconds, 0.3)
    for start in (20, 70, 130, 170):  # four blinks of 4 frames
        ear[start : start + 4] = 0.05
    rate = landmarks.landmark_blink_rate(ear_face(ear), fps)
    assert rate == pytest.approx(4 / seconds)
    assert landmarks.landmark_blink_rate(ear_face(np.full(50, 0.3)), fps) == 0.0
    assert landmarks.blink_rate_error(rate, 0.25) == pytest.approx(0.25)


# -- image metrics ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def portrait(astronaut) -> np.ndarray:
    return (resize(astronaut, (256, 256), anti_aliasing=True) * 255).astype(np.uint8)


def test_psnr_ssim_identities(portrait):
    video = np.stack([portrait, portrait[::-1]])
    assert image.psnr(video, video) == 100.0
    assert image.ssim(video, video) == pytest.approx(1.0)
    noisy = video.astype(np.int16)
    noisy[..., 0] += np.where(np.indices(video.shape[:3]).sum(0) % 2 == 0, 4, -4).astype(np.int16)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    mse = np.mean((noisy.astype(float) - video) ** 2, axis=(1, 2, 3))
    assert image.psnr(video, noisy) == pytest.approx(np.mean(10 * np.log10(255**2 / mse)))
    assert image.ssim(video, noisy) < 1.0


def test_cpbd_is_lower_for_a_blurred_image(portrait):
    sharp = image.cpbd(portrait)
    blurred = (gaussian(portrait, sigma=1.5, channel_axis=-1) * 255).astype(np.uint8)
    assert 0.0 < sharp <= 1.0
    assert image.cpbd(blurred) < sharp
    assert np.isnan(image.cpbd(np.full((128, 128, 3), 90, np.uint8)))  # no edges: undefined


def test_edge_width_of_a_ramp():
    """A vertical edge rising in 5 steps (0→40→…→200) is 5 pixels wide, measured from either side."""
    row = np.concatenate([np.zeros(10), [40, 80, 120, 160], np.full(10, 200.0)])
    gray = np.tile(row, (5, 1))
    edges = np.zeros_like(gray, bool)
    edges[2, 11] = True
    assert image.edge_widths(gray, edges)[2, 11] == 5


def test_pixel_change_and_baselines(portrait):
    video = np.stack([portrait, portrait, 255 - portrait])
    change = image.pixel_change(video)
    assert change[0] == 0.0 and change[1] > 0
    delayed = baselines.baseline("shifted", np.arange(30), fps=25)
    assert delayed[:13].tolist() == [0] * 13 and delayed[13] == 1 and len(delayed) == 30
    assert (baselines.baseline("still", video, fps=25) == portrait).all()


# -- sync confidence ------------------------------------------------------------------------------


class ProjectionExpert:
    """A fixed random projection of flattened windows, L2-normalised (stands in for a trained expert)."""

    def __init__(self, dim: int, window: int = 5, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.randn(dim * window, 32, generator=g)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x.flatten(1) @ self.proj, dim=-1)

    embed_audio = embed_lip = _embed


def test_sync_conf_is_higher_for_aligned_than_shifted_or_shuffled():
    rng = np.random.default_rng(0)
    t, k = 150, 6
    lip = np.cumsum(rng.normal(size=(t, k)), axis=0)  # smooth-ish trajectories
    audio = lip + rng.normal(0, 0.1, size=lip.shape)  # audio features that "cause" the lips
    expert = ProjectionExpert(k)
    aligned = sync.sync_sweep(expert, audio, lip)
    assert aligned.offset == 0 and len(aligned.dists) == 31
    shifted = sync.sync_sweep(expert, audio, baselines.delayed(lip, 8))
    assert shifted.offset == -8  # the lips lag the audio by 8 frames
    shuffled = sync.sync_conf(expert, audio, lip[rng.permutation(t)])
    assert aligned.conf > shuffled
    assert aligned.dist < shifted.dists[15]  # distance at zero offset grows when out of sync


def test_sync_sweep_narrows_for_short_clips():
    lip = np.random.default_rng(1).normal(size=(15, 3))
    score = sync.sync_sweep(ProjectionExpert(3), lip, lip)
    assert len(score.dists) == 2 * 5 + 1 and score.offset == 0


# -- one clip, all metrics ------------------------------------------------------------------------


def test_score_clip_truth_vs_itself_and_still(portrait):
    from disenttalk.metrics.clip import METRICS, Trace, curves, score_clip

    t, fps = 60, 25
    ear = np.full(t, 0.3)
    ear[20:24] = 0.05
    lm = ear_face(ear)
    lm[:, list(topology.LIPS), :2] = face_landmarks(t)[:, list(topology.LIPS), :2]
    for i in (1, 6, 168, topology.NOSE_TIP, topology.NOSE_BOTTOM, topology.FOREHEAD, 234, 454, 133, 362):
        lm[:, i, :2] = (7.0 * i % 97, 13.0 * i % 89)  # spread-out stable points
    frames = np.stack([np.roll(portrait, i, axis=1) for i in range(t)])
    rng = np.random.default_rng(0)
    lip = np.cumsum(rng.normal(size=(t, 4)), axis=0)
    truth = Trace(landmarks=lm, lip=lip, frames=frames)
    kw = dict(fps=fps, audio_features=lip, expert=ProjectionExpert(4), cpbd_stride=20)

    same = score_clip(truth, truth, **kw)
    assert set(same) == set(METRICS)
    assert same["lmd"] == pytest.approx(0.0, abs=1e-9) and same["blink_rate_error"] == 0.0
    assert same["blink_rate"] == pytest.approx(1 / (t / fps)) and same["psnr"] == 100.0
    assert same["sync_offset"] == 0 and same["sync_conf"] > 0
    assert same["blink_duration"] == pytest.approx(4 / fps)  # the one 4-frame closure

    frozen = Trace(*(baselines.still(x) for x in (lm, lip, frames)))
    still = score_clip(frozen, truth, **kw)
    assert still["landmark_change"] == 0.0 and still["pixel_change"] == 0.0
    assert still["lmd"] > 0 and still["blink_rate"] == 0.0 and still["psnr"] < 100.0
    assert still["sync_conf"] < same["sync_conf"]
    assert set(curves(truth)) == {"ear", "mouth", "change"}


def test_blink_durations_count_single_frame_flicker():
    from disenttalk.metrics.landmarks import blink_durations

    ear = np.full(100, 0.3)
    ear[10] = 0.05  # one-frame dip (flicker)
    ear[40:46] = 0.05  # a 240 ms blink
    durations = blink_durations(ear_face(ear), 25.0)
    assert durations.tolist() == pytest.approx([0.04, 0.24])


def test_poisson_rate_interval_matches_the_exact_table():
    # Garwood's exact 95 % limits: 0 events → (0, ln 40); 8 events → (3.454, 15.763)
    low, high = landmarks.poisson_rate_interval(0, 10.0)
    assert low == 0.0 and high == pytest.approx(np.log(40) / 10.0)
    low, high = landmarks.poisson_rate_interval(8, 34.0)
    assert low * 34 == pytest.approx(3.454, abs=1e-3) and high * 34 == pytest.approx(15.763, abs=1e-3)
    wide, narrow = landmarks.poisson_rate_interval(8, 32.0), landmarks.poisson_rate_interval(80, 320.0)
    assert narrow[0] > wide[0] and narrow[1] < wide[1]  # ten times the footage, a tighter interval
    with pytest.raises(ValueError):
        landmarks.poisson_rate_interval(3, 0.0)


def test_gap_closed_between_still_and_oracle():
    from workflows.evaluation import gap_closed

    assert gap_closed(0.02, still=0.025, oracle=0.012) == pytest.approx(5 / 13)
    assert gap_closed(0.012, still=0.025, oracle=0.012) == pytest.approx(1.0)
    assert gap_closed(0.03, still=0.025, oracle=0.012) < 0  # worse than a still face
    assert np.isnan(gap_closed(0.02, still=0.012, oracle=0.012))  # no gap to close
