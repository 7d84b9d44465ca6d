"""Face crops: the box follows the face, landmarks map into the crop, paste-back inverts crop."""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.face.crop import crop_boxes, crop_clip
from disenttalk.face.tracker import FaceTracker


@pytest.fixture(scope="module")
def clip(astronaut):
    """4 frames of the astronaut shifted right by 0, 4, 8, 12 px, and their landmarks."""
    frames = np.stack([np.roll(astronaut, 4 * i, axis=1) for i in range(4)])
    with FaceTracker() as tracker:
        face = tracker.track_image(astronaut)
    landmarks = np.stack([face + [4 * i, 0, 0] for i in range(4)]).astype(np.float32)
    return frames, landmarks, tracker


def test_crop_contains_the_face_and_landmarks_map_into_it(clip):
    frames, landmarks, _ = clip
    crops, transform = crop_clip(frames, landmarks, size=128, margin=0.3, smooth=0)
    assert crops.shape == (4, 128, 128, 3) and crops.dtype == np.uint8
    inside = transform.apply(landmarks)
    assert inside.shape == landmarks.shape
    xy = inside[..., :2]
    # Face bbox fills 1/(1 + 2·0.3) of the crop, centred.
    assert xy.min() > 0.15 * 128 and xy.max() < 0.85 * 128
    np.testing.assert_allclose(transform.invert(inside), landmarks, atol=1e-3)
    # Following the face: every crop shows the same picture.
    assert np.abs(crops.astype(int) - crops[:1]).mean() < 4.0


def test_tracker_finds_the_face_again_in_the_crop(clip):
    frames, landmarks, _ = clip
    crops, transform = crop_clip(frames[:1], landmarks[:1], size=256)
    with FaceTracker() as tracker:
        again = tracker.track_image(crops[0])
    assert again is not None
    expected = transform.apply(landmarks[:1])[0]
    assert np.median(np.abs(again[:, :2] - expected[:, :2])) < 3.0


def test_paste_puts_the_crop_back(clip):
    frames, landmarks, _ = clip
    crops, transform = crop_clip(frames, landmarks, size=256, smooth=0)
    restored = transform.paste(frames, crops)
    assert restored.shape == frames.shape
    # Pasting an unmodified crop changes little (resampling only, the box is ~1:1 scale here).
    assert np.abs(restored.astype(int) - frames).mean() < 2.0
    # Pasting a black crop blacks out the box, and only the box.
    black = transform.paste(frames, np.zeros_like(crops), feather=0.0)
    cx, cy = transform.centres[0].astype(int)
    assert black[0, cy, cx].max() == 0
    assert np.array_equal(black[0, :5, :5], frames[0, :5, :5])


def test_boxes_are_smoothed_and_fill_faceless_frames(clip):
    _, landmarks, _ = clip
    shake = np.where(np.arange(12) % 2, 5.0, -5.0)  # tracker jitter of ±5 px in x
    jitter = np.repeat(landmarks[:1], 12, axis=0).astype(np.float64)
    jitter[..., 0] += shake[:, None]
    jitter[6] = np.nan
    raw = crop_boxes(jitter, (512, 512), smooth=0)
    assert np.isfinite(raw.centres).all() and np.isfinite(raw.sides).all()
    assert raw.centres[6, 0] == pytest.approx(raw.centres[5, 0])  # held from its neighbours
    smooth = crop_boxes(jitter, (512, 512), smooth=3.0)
    step = lambda b: np.abs(np.diff(b.centres[:, 0])).max()  # noqa: E731
    assert step(smooth) < 0.2 * step(raw)
    with pytest.raises(ValueError):
        crop_boxes(np.full((3, 478, 3), np.nan), (64, 64))
