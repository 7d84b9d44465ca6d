"""MediaPipe FaceMesh tracking on the astronaut portrait."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import resize

from disenttalk.face import topology as topo
from disenttalk.face.tracker import FaceTracker


@pytest.fixture(scope="module")
def tracker():
    with FaceTracker() as t:
        yield t


def test_still_image_has_478_landmarks_on_the_face(tracker, astronaut):
    lm = tracker.track_image(astronaut)
    assert lm is not None and lm.shape == (478, 3) and lm.dtype == np.float32
    # Pixel coordinates: the astronaut's face is in the upper middle of the 512² image.
    nose = lm[topo.NOSE_TIP]
    assert 150 < nose[0] < 300 and 80 < nose[1] < 200
    # Subject's right eye appears on the image's left.
    assert lm[topo.RIGHT_EYE_OUTER, 0] < lm[topo.LEFT_EYE_OUTER, 0]
    # z is in the same (pixel) scale as x: the face's depth range is a fraction of its width.
    width = np.ptp(lm[:, 0])
    assert 0.1 * width < np.ptp(lm[:, 2]) < 1.5 * width


def test_video_mode_flags_faceless_frames_as_nan(tracker, astronaut):
    face = (resize(astronaut, (256, 256), anti_aliasing=True) * 255).astype(np.uint8)
    blank = np.full_like(face, 127)
    frames = np.stack([face, face, blank, face])
    tracks = tracker.track(frames)
    assert tracks.landmarks.shape == (4, 478, 3)
    assert tracks.valid.tolist() == [True, True, False, True]
    assert np.isnan(tracks.landmarks[2]).all() and np.isfinite(tracks.landmarks[tracks.valid]).all()
    assert tracks.fraction_valid == pytest.approx(0.75)
    # The same still frame gives (nearly) the same landmarks, at 256² scale.
    still = tracker.track_image(face)
    assert np.abs(tracks.landmarks[0, :, :2] - still[:, :2]).max() < 3.0
    # Reusable across clips: a second clip starts from a fresh graph.
    again = tracker.track(frames[:1])
    assert again.valid.all()


def test_no_face_in_still_returns_none(tracker):
    assert tracker.track_image(np.zeros((128, 128, 3), np.uint8)) is None
    with pytest.raises(ValueError):
        tracker.track_image(np.zeros((128, 128), np.uint8))


def test_mediapipe_start_up_chatter_is_silenced_unless_verbose():
    import os
    import subprocess
    import sys

    probe = """
import os, numpy as np
from skimage import data
from disenttalk.face.tracker import FaceTracker, quiet_native_logs
tracker = FaceTracker()
for _ in range(2):  # a second clip resets the video graph
    tracker.track(np.stack([data.astronaut()] * 2))
with quiet_native_logs():
    os.write(2, b"native inside\\n")
os.write(2, b"native after\\n")
"""
    env = {k: v for k, v in os.environ.items() if k != "DISENTTALK_VERBOSE"}
    quiet = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "W0000" not in quiet.stderr and "XNNPACK" not in quiet.stderr
    assert "native inside" not in quiet.stderr and "native after" in quiet.stderr
    loud = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**env, "DISENTTALK_VERBOSE": "1"}, timeout=300)
    assert "native inside" in loud.stderr and "XNNPACK" in loud.stderr


def test_video_follows_one_face_when_another_grows_larger(astronaut):
    """Two people side by side trade sizes half-way: the tracker stays with the first one."""
    from tests import photos
    from tests.clips import face_crop, two_faces

    frames = two_faces(face_crop(astronaut, 160), face_crop(photos.load("grace_hopper"), 160), 40)
    with FaceTracker(max_faces=2) as following:
        tracks = following.track(frames[:20])
        tracks2 = following.track(frames[20:], resume=True)  # the next chunk of the same video
    valid = np.concatenate([tracks.valid, tracks2.valid])
    xs = np.concatenate([tracks.landmarks, tracks2.landmarks])[valid, :, 0].mean(1)
    assert valid.mean() > 0.9 and (xs < 160).all()  # always the left face (the astronaut)
    with FaceTracker(max_faces=2, static=True) as largest:  # per frame, the largest wins
        still = largest.track(frames)
    assert (still.landmarks[still.valid, :, 0].mean(1)[-5:] > 160).all()
