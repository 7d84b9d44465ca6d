"""Face tracking with MediaPipe FaceMesh (478 refined landmarks, models bundled in the wheel).

Coordinates are image pixels: x, y from the top-left corner, z scaled by the image width
(MediaPipe's z uses the same scale as x), smaller z = closer to the camera.
Frames where no face is found are kept, flagged ``valid=False``, and their landmarks are NaN
(never zeros, which would read as a real face squeezed into the corner).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from disenttalk.face.topology import NUM_LANDMARKS


@dataclass
class Tracks:
    """Per-frame landmarks float32 [T,478,3] (NaN where not found) and validity bool [T]."""

    landmarks: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def fraction_valid(self) -> float:
        """Share of frames with a face."""
        return float(self.valid.mean()) if len(self.valid) else 0.0


VERBOSE_ENV = "DISENTTALK_VERBOSE"


@contextmanager
def quiet_native_logs() -> Iterator[None]:
    """Silence what C++ libraries write straight to file descriptor 2 (MediaPipe and TFLite print
    a few lines of start-up chatter per graph, which absl sends to stderr before any Python
    logging setting applies). Python exceptions still propagate; ``DISENTTALK_VERBOSE=1`` keeps it all."""
    if os.environ.get(VERBOSE_ENV):
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_mediapipe():
    """The ``mediapipe`` module, imported the first time in a short-lived thread.

    Importing mediapipe keeps an exception with its traceback (its audio tasks find no PortAudio
    library), and a traceback holds every frame of the stack that imported it. Imported lazily
    from deep inside a call, that would pin the caller's locals — a whole video's tracks — for
    the life of the process; a thread's stack holds nothing of ours.
    """
    os.environ.setdefault("GLOG_minloglevel", "2")
    if "mediapipe" not in sys.modules:
        loader = threading.Thread(target=importlib.import_module, args=("mediapipe",), daemon=True)
        loader.start()
        loader.join()
    import mediapipe  # raises here, in the caller, if it cannot be imported

    return mediapipe


def _face_mesh(static: bool, max_faces: int, min_confidence: float):
    mp = import_mediapipe()

    with quiet_native_logs():  # the chatter comes when a graph is built and first finds a face
        return mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static,
            max_num_faces=max_faces,
            refine_landmarks=True,  # adds the iris points 468–477
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )


def _all_faces(result, width: int, height: int) -> list[np.ndarray]:
    """Every detected face as float32 [478,3] pixels."""
    scale = np.array([width, height, width], dtype=np.float32)
    return [np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float32) * scale
            for face in result.multi_face_landmarks or ()]


def _largest_face(result, width: int, height: int) -> np.ndarray | None:
    """The detected face with the largest landmark bounding box, as float32 [478,3] pixels."""
    faces = _all_faces(result, width, height)
    return max(faces, key=lambda pts: centre_size(pts)[1]) if faces else None


def centre_size(pts: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre [2] and size (√ of the landmark box's area) of one face's [478,3] pixels."""
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    return (lo + hi) / 2, float(np.sqrt(np.prod(hi - lo)))


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 [H,W,3] RGB image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


class FaceTracker:
    """MediaPipe FaceMesh tracker, reusable across clips; ``close()`` (or ``with``) frees its graphs.

    ``track`` runs FaceMesh in video mode (unless ``static``), which carries the face from frame
    to frame instead of re-detecting it. That state must not leak between clips, so each call
    resets the tracker's one video graph first: a reset costs about half of building a new
    graph (~50 ms vs ~100 ms under load, against 3–10 ms per 256² frame; ``bench face``).
    ``track_image`` uses a static-mode graph. With ``max_faces > 1`` the largest face is kept
    in a still image; in a video the tracker follows one person: the largest face at the start,
    then in each frame the face that continues it (its centre within half a face of where the
    followed face was last seen), so a second face that comes closer or grows larger never takes
    over. Frames where the followed face is missing are invalid; after ``lost_after`` such frames
    in a row the largest face is picked again.
    """

    def __init__(self, static: bool = False, max_faces: int = 1, min_confidence: float = 0.5,
                 lost_after: int = 12):
        self.static = static
        self.max_faces = max_faces
        self.min_confidence = min_confidence
        self.lost_after = lost_after
        self._still = None  # static-mode graph (track_image, static tracking), built on first use
        self._video = None  # video-mode graph, reset between clips
        self._followed: tuple[np.ndarray, float] | None = None  # (centre, size) last seen
        self._missed = 0  # frames in a row without the followed face

    def track(self, frames: np.ndarray, resume: bool = False) -> Tracks:
        """Landmarks of the followed (or largest) face in every frame of uint8 [T,H,W,3] RGB.

        ``resume=True`` continues the previous call's video, as the next chunk of a long clip:
        the tracker keeps its state and the face it follows. Otherwise it starts afresh.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4:
            raise ValueError(f"expected frames [T,H,W,3], got shape {frames.shape}")
        t, h, w = frames.shape[:3]
        landmarks = np.full((t, NUM_LANDMARKS, 3), np.nan, dtype=np.float32)
        valid = np.zeros(t, dtype=bool)
        if not resume:
            self._followed, self._missed = None, 0
        follow = self.max_faces > 1 and not self.static
        # one quiet span from the (re)built graph to its last frame: its calculators open on the
        # graph's own threads and print then, after reset() has returned but before the first
        # result comes back
        with quiet_native_logs():
            mesh = self._graph(static=self.static, reset=not resume)
            for i in range(t):
                result = mesh.process(_as_rgb_uint8(frames[i]))
                pts = self._follow(_all_faces(result, w, h)) if follow else _largest_face(result, w, h)
                if pts is not None:
                    landmarks[i], valid[i] = pts, True
        return Tracks(landmarks=landmarks, valid=valid)

    def _follow(self, faces: list[np.ndarray]) -> np.ndarray | None:
        """The face continuing the followed one (or the largest when none is followed)."""
        if self._followed is not None:
            centre, size = self._followed
            near = [f for f in faces if np.linalg.norm(centre_size(f)[0] - centre) <= 0.5 * size]
            faces = sorted(near, key=lambda f: float(np.linalg.norm(centre_size(f)[0] - centre)))
        else:
            faces = sorted(faces, key=lambda f: -centre_size(f)[1])
        if not faces:
            self._missed += 1
            if self._missed >= self.lost_after:
                self._followed = None
            return None
        self._followed, self._missed = centre_size(faces[0]), 0
        return faces[0]

    def _graph(self, static: bool, reset: bool = True):
        """The static graph, or the video graph (reset to forget the previous clip)."""
        if static:
            if self._still is None:
                self._still = _face_mesh(True, self.max_faces, self.min_confidence)
            return self._still
        if self._video is None:
            self._video = _face_mesh(False, self.max_faces, self.min_confidence)
        elif reset:
            with quiet_native_logs():  # a reset rebuilds the calculators, chatter included
                self._video.reset()
        return self._video

    def track_image(self, image: np.ndarray) -> np.ndarray | None:
        """Landmarks float32 [478,3] of the (largest) face in one still image, or None."""
        image = _as_rgb_uint8(image)
        with quiet_native_logs():
            result = self._graph(static=True).process(image)
        return _largest_face(result, image.shape[1], image.shape[0])

    def track_image_all(self, image: np.ndarray) -> list[np.ndarray]:
        """Landmarks float32 [478,3] of every face (up to ``max_faces``) in one still image."""
        image = _as_rgb_uint8(image)
        with quiet_native_logs():
            result = self._graph(static=True).process(image)
        return _all_faces(result, image.shape[1], image.shape[0])

    def close(self) -> None:
        """Release the MediaPipe graphs (the tracker can still be used; they are rebuilt)."""
        for name in ("_still", "_video"):
            graph = getattr(self, name, None)
            if graph is not None:
                graph.close()
                setattr(self, name, None)

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close() must not keep a MediaPipe graph alive
        try:
            self.close()
        except Exception:
            pass
