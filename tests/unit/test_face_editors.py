"""Geometric editors and the measures they move: EAR, mouth opening, blinks."""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.face import topology as topo
from disenttalk.face.editors import close_eyes, close_lips, open_mouth
from disenttalk.face.measures import (
    blink_rate,
    detect_blinks,
    eye_aspect_ratio,
    face_size,
    mouth_opening,
)
from disenttalk.face.tracker import FaceTracker


@pytest.fixture(scope="module")
def face(astronaut) -> np.ndarray:
    """Astronaut landmarks [478,3] in pixels."""
    with FaceTracker() as tracker:
        return tracker.track_image(astronaut)


def test_measures_on_a_real_face(face):
    assert 40 < face_size(face) < 120  # outer eye corners of a ~150 px wide face
    ear = eye_aspect_ratio(face)
    assert ear.shape == (2,) and np.all((ear > 0.15) & (ear < 0.6))
    assert 0 <= mouth_opening(face) < 0.5


def test_close_eyes_drops_ear_and_leaves_the_mouth(face):
    closed = close_eyes(face)
    assert np.all(eye_aspect_ratio(closed) < 0.02)
    half = close_eyes(face, amount=0.5)
    np.testing.assert_allclose(eye_aspect_ratio(half), 0.5 * eye_aspect_ratio(face), rtol=0.05)
    np.testing.assert_allclose(closed[list(topo.LIPS)], face[list(topo.LIPS)], atol=1e-3)
    # Eyebrows are above the lid's reach.
    brows = list(topo.RIGHT_EYEBROW + topo.LEFT_EYEBROW)
    assert np.abs(closed[brows] - face[brows]).max() < 0.05 * face_size(face)


def test_open_mouth_then_close_lips(face):
    opened = open_mouth(face, 0.25)
    assert mouth_opening(opened) > mouth_opening(face) + 0.15
    # The chin follows the jaw; the eyes do not move.
    drop = opened[topo.CHIN, 1] - face[topo.CHIN, 1]
    assert 0.1 * face_size(face) < drop <= 0.26 * face_size(face)
    eyes = list(topo.EYES)
    assert np.abs(opened[eyes] - face[eyes]).max() < 1e-3 * face_size(face)
    closed = close_lips(opened)
    assert mouth_opening(closed) == pytest.approx(0.0, abs=1e-6)
    part = close_lips(opened, amount=0.5)
    assert mouth_opening(part) == pytest.approx(0.5 * mouth_opening(opened), rel=0.02)
    # Outer lips follow: the outer-lip gap shrinks along with the inner one.
    outer_gap = lambda lm: np.linalg.norm(lm[13] - lm[14]) + np.linalg.norm(lm[0] - lm[17])  # noqa: E731
    assert outer_gap(closed) < outer_gap(opened) - 0.1 * face_size(face)


def test_editors_are_vectorised_and_rotation_invariant(face):
    clip = np.stack([face, open_mouth(face, 0.1), open_mouth(face, 0.3)])  # [3,478,3]
    batch = close_lips(clip)
    assert batch.shape == clip.shape
    np.testing.assert_allclose(batch[1], close_lips(clip[1]), atol=1e-4)
    per_frame = open_mouth(np.stack([face, face]), np.array([0.0, 0.2]))
    np.testing.assert_allclose(per_frame[0], face, atol=1e-4)
    # Rotating the face and then editing equals editing and then rotating.
    angle = np.deg2rad(25)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    centre = face.mean(0)
    turned = (face - centre) @ rot.T + centre
    np.testing.assert_allclose(close_eyes(turned), (close_eyes(face) - centre) @ rot.T + centre, atol=1e-3)
    with pytest.raises(ValueError):
        close_lips(face, amount=1.5)


def test_blinks_are_detected_relative_to_the_baseline():
    fps = 25.0
    ear = np.full(100, 0.3)
    ear[20:24] = 0.1  # 160 ms blink
    ear[60:63] = 0.12  # 120 ms blink
    ear[80] = 0.1  # a single-frame glitch is not a blink
    ear[90] = np.nan  # no face in this frame
    blinks = detect_blinks(np.stack([ear, ear], -1), fps)
    assert blinks == [(20 / fps, 24 / fps), (60 / fps, 63 / fps)]
    assert blink_rate(ear, fps) == pytest.approx(2 / 4.0)
    assert detect_blinks(np.full(50, 0.3), fps) == []
    # A scaled-down face (smaller baseline EAR) gives the same blinks.
    assert detect_blinks(0.5 * ear, fps) == blinks
