"""Portrait preparation: a photo → the face crop the model animates, its landmarks, its box.

:func:`find_face` is the one place the server calls the face pipeline; when face detection
for group photos lands in ``disenttalk.face``, this is what switches to it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.errors import ApiError

# MediaPipe FaceMesh indices: outer eye corners and the lip centre (upper, lower)
_EYES, _MOUTH = (33, 263), (13, 14)


@dataclass
class Portrait:
    """A prepared photo: everything generation needs besides the audio."""

    portrait_id: str
    photo: np.ndarray  # uint8 [H,W,3] (shrunk to the server's max side)
    crop: np.ndarray  # uint8 [S,S,3], the framing the model was trained on
    crop_landmarks: np.ndarray  # float32 [478,3] in crop pixels
    transform: Any  # disenttalk.face.crop.CropTransform for one frame (crop ↔ photo)
    face_box: list[int]  # [x0, y0, x1, y1] of the face in ``photo`` pixels
    roll_deg: float  # head roll in the photo (0 = upright)

    def summary(self) -> dict:
        """What ``POST /v1/portraits`` answers."""
        h, w = self.photo.shape[:2]
        return {"portrait_id": self.portrait_id, "face_box": self.face_box, "image_size": [w, h],
                "crop_size": int(self.crop.shape[0]), "roll_deg": round(self.roll_deg, 1)}


def content_id(data: bytes) -> str:
    """The portrait id: SHA-256 of the uploaded bytes (same photo, same id, cached once)."""
    return hashlib.sha256(data).hexdigest()


def roll_degrees(landmarks: np.ndarray) -> float:
    """Angle of the face's up direction (mouth → eyes) from the image's up, in degrees."""
    eyes = landmarks[list(_EYES), :2].mean(0)
    mouth = landmarks[list(_MOUTH), :2].mean(0)
    dx, dy = eyes - mouth
    return math.degrees(math.atan2(dx, -dy))  # y grows downwards


def find_face(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    """(crop, crop landmarks, CropTransform) of the face in ``image``; 422 if there is none.

    An upside-down face is refused rather than animated: FaceMesh can lay an upright mesh over
    it (eyes on the mouth), so the photo and its half-turn are both scored by the face
    detector FaceMesh starts from, and the half-turn winning clearly means "upside down".
    """
    from workflows.generate import GenerateError, face_crop

    flipped = np.ascontiguousarray(image[::-1, ::-1])
    try:
        found = face_crop(image)
    except GenerateError:
        found = None
    upright, turned = detection_score(image), detection_score(flipped)
    if turned > max(upright + UPSIDE_DOWN_MARGIN, 0.5):
        raise ApiError(422, "face_upside_down",
                       "the face in the image is upside down; send an upright photo")
    if found is None:
        raise ApiError(422, "no_face", "no face found in the image")
    return found


UPSIDE_DOWN_MARGIN = 0.1  # detector score: the astronaut scores 0.92 upright, 0.65 upside down


def detection_score(image: np.ndarray) -> float:
    """Best MediaPipe short-range face detection score in ``image`` (0 when none)."""
    import os

    os.environ.setdefault("GLOG_minloglevel", "2")
    import mediapipe as mp

    with mp.solutions.face_detection.FaceDetection(model_selection=0,
                                                   min_detection_confidence=0.3) as detector:
        result = detector.process(np.ascontiguousarray(image))
    return max((float(d.score[0]) for d in result.detections or []), default=0.0)


def prepare(portrait_id: str, photo: np.ndarray, max_roll_deg: float = 60.0) -> Portrait:
    """Find, check and crop the face of ``photo``."""
    crop, crop_landmarks, transform = find_face(photo)
    landmarks = transform.invert(crop_landmarks[None])[0]  # photo pixels
    roll = roll_degrees(landmarks)
    if abs(roll) > 120:
        raise ApiError(422, "face_upside_down",
                       "the face in the image is upside down; send an upright photo")
    if abs(roll) > max_roll_deg:
        raise ApiError(422, "face_rotated",
                       f"the face is turned {roll:+.0f} degrees from upright; rotate the photo")
    h, w = photo.shape[:2]
    lo = np.clip(np.floor(landmarks[:, :2].min(0)), 0, [w - 1, h - 1]).astype(int)
    hi = np.clip(np.ceil(landmarks[:, :2].max(0)), 0, [w - 1, h - 1]).astype(int)
    return Portrait(portrait_id=portrait_id, photo=photo, crop=crop,
                    crop_landmarks=np.asarray(crop_landmarks, np.float32), transform=transform,
                    face_box=[int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])], roll_deg=roll)
