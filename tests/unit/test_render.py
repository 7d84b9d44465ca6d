"""WarpRenderer: identity, locality of edits, and what MediaPipe sees when it re-tracks the frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disenttalk.face import topology as topo
from disenttalk.face.editors import close_eyes, open_mouth
from disenttalk.face.measures import eye_aspect_ratio, face_size, mouth_opening
from disenttalk.face.tracker import FaceTracker
from disenttalk.render import RenderConfig, WarpRenderer
from disenttalk.render.paint import band_coverage
from disenttalk.render.warp import ThinPlateField

MOUTH_AMOUNTS = (0.0, 0.1, 0.2, 0.3)


@pytest.fixture(scope="module")
def tracker():
    with FaceTracker(static=True) as t:
        yield t


@pytest.fixture(scope="module")
def portrait(astronaut_256):
    """Astronaut at 256² and its tracked landmarks [478,3]."""
    return astronaut_256


@pytest.fixture(scope="module")
def renderer(portrait):
    return WarpRenderer(*portrait)


@pytest.fixture(scope="module")
def mouth_frames(portrait, renderer):
    """Frames with the jaw dropped by MOUTH_AMOUNTS, rendered in one batch."""
    targets = np.stack([open_mouth(portrait[1], a) for a in MOUTH_AMOUNTS])
    return targets, renderer.render(targets)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def change(frame: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Absolute change per pixel [H,W], summed over channels."""
    return np.abs(frame.astype(np.float64) - image.astype(np.float64)).sum(-1)


def test_identity_target_reproduces_the_portrait(portrait, renderer):
    image, landmarks = portrait
    frame = renderer.render(landmarks)
    assert frame.shape == image.shape and frame.dtype == np.uint8
    assert psnr(frame, image) >= 35.0
    frames = renderer.render(np.stack([landmarks] * 3))
    assert frames.shape == (3, *image.shape)
    assert psnr(frames[2], image) >= 35.0


def test_chunked_rendering_matches_one_frame_at_a_time(portrait, mouth_frames):
    targets, frames = mouth_frames
    small = WarpRenderer(*portrait, config=RenderConfig(chunk_frames=3))
    np.testing.assert_array_equal(small.render(targets), frames)
    np.testing.assert_array_equal(small.render(targets[2]), frames[2])


def test_open_mouth_changes_pixels_below_the_nose_and_keeps_the_background(portrait, mouth_frames):
    image, landmarks = portrait
    _, frames = mouth_frames
    nose_row = int(landmarks[topo.NOSE_TIP, 1])
    for frame in frames[1:]:
        d = change(frame, image)
        assert d.sum() > 0
        assert d[nose_row:].sum() / d.sum() > 0.8
        # The anchors keep the far background still (up to sub-pixel spline residue).
        for corner in (d[:48, :48], d[:48, -48:], d[-48:, :48]):
            assert corner.mean() < 0.05 and corner.max() <= 6


def test_closed_eyes_change_pixels_around_the_eyes(portrait, renderer):
    image, landmarks = portrait
    d = change(renderer.render(close_eyes(landmarks, 1.0)), image)
    margin = 0.25 * face_size(landmarks)
    near = np.zeros(d.shape, bool)
    for eye in (topo.RIGHT_EYE, topo.LEFT_EYE):
        lo = np.floor(landmarks[list(eye), :2].min(0) - margin).astype(int).clip(0)
        hi = np.ceil(landmarks[list(eye), :2].max(0) + margin).astype(int)
        near[lo[1] : hi[1], lo[0] : hi[0]] = True
    assert d.sum() > 0
    assert d[near].sum() / d.sum() > 0.8


def test_retracked_mouth_opening_follows_the_request(tracker, mouth_frames):
    targets, frames = mouth_frames
    seen = np.array([mouth_opening(tracker.track_image(f)) for f in frames])
    asked = mouth_opening(targets)
    assert np.all(np.diff(seen) > 0), seen
    assert np.corrcoef(seen, asked)[0, 1] > 0.95
    # At least half of the requested extra opening survives the round trip through pixels.
    assert seen[-1] - seen[0] > 0.5 * (asked[-1] - asked[0])


def test_retracked_eyes_close(tracker, portrait, renderer):
    _, landmarks = portrait
    open_ear = eye_aspect_ratio(tracker.track_image(renderer.render(landmarks)))
    closed = renderer.render(close_eyes(landmarks, 1.0))
    closed_ear = eye_aspect_ratio(tracker.track_image(closed))
    assert np.all(closed_ear < 0.5 * open_ear), (open_ear, closed_ear)


def test_bad_inputs_are_rejected(portrait, renderer):
    image, landmarks = portrait
    with pytest.raises(ValueError):
        WarpRenderer(image.astype(np.float32), landmarks)
    with pytest.raises(ValueError):
        WarpRenderer(image, landmarks[:468])
    with pytest.raises(ValueError):
        renderer.render(landmarks[None, :100])


def test_thin_plate_field_reproduces_a_translation():
    # With no anchors the spline's affine part carries a uniform shift exactly (TPS identity).
    rng = np.random.default_rng(0)
    controls = rng.uniform(5, 58, size=(40, 2))
    field = ThinPlateField(controls, np.zeros((0, 2)), 64, 64, grid_size=16, regularization=0.0)
    shift = torch.tensor([3.0, -2.0])
    grid = field.backward_grid(shift.expand(1, 40, 2))  # [1,64,64,2]
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    expected = torch.stack([xs, ys], -1)[None] - shift * 2.0 / 63.0  # identity grid, shifted
    torch.testing.assert_close(grid, expected, atol=1e-4, rtol=0)


def test_band_coverage_integrates_to_the_area():
    xs, ys = torch.arange(32.0) + 0.5, torch.arange(24.0) + 0.5
    top, bottom = torch.full((2, 32), 6.0), torch.full((2, 32), 16.0)
    bottom[1] = 6.0  # a closed band covers nothing
    ends = (torch.tensor([4.0, 4.0]), torch.tensor([20.0, 20.0]))
    cover = band_coverage(xs, ys, top, bottom, ends, feather=1.0)
    assert cover.shape == (2, 24, 32)
    assert abs(float(cover[0].sum()) - 16.0 * 10.0) < 1e-3
    assert float(cover[0].max()) == 1.0 and float(cover[1].max()) <= 0.25
