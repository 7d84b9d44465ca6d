"""Portrait preparation: a photo → the face crop the model animates, its landmarks, its box.

:func:`find_face` is the one place the server calls the face pipeline
(``disenttalk.face.portrait.prepare_portrait``: every face found, the largest usable one
animated unless the caller picks another, clear reasons when none can be).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serve.errors import ApiError

# NoUsableFace reasons → the API's error codes (all 422: the photo is readable, the face is not usable)
REASONS = {"no_face": "no_face", "no_landmarks": "no_face", "rotated": "face_rotated",
           "too_small": "face_too_small", "cut_off": "face_cut_off", "bad_index": "bad_face_index"}


@dataclass
class Portrait:
    """A prepared photo: everything generation needs besides the audio."""

    portrait_id: str
    photo: np.ndarray = field(repr=False)  # uint8 [H,W,3] (shrunk to the server's max side)
    crop: np.ndarray = field(repr=False)  # uint8 [S,S,3], the framing the model was trained on
    crop_landmarks: np.ndarray = field(repr=False)  # float32 [478,3] in crop pixels
    transform: Any = field(repr=False)  # CropTransform for one frame (crop ↔ photo)
    face: int  # index of the animated face in ``faces``
    faces: list[dict]  # every face found: box (x, y, w, h), score, usable, problem
    framing: tuple[int, float]  # (crop size, margin) the crop was cut with

    @property
    def face_box(self) -> list[int]:
        """(x, y, w, h) of the animated face in ``photo`` pixels."""
        return self.faces[self.face]["box"]

    def summary(self) -> dict:
        """What ``POST /v1/portraits`` answers."""
        h, w = self.photo.shape[:2]
        return {"portrait_id": self.portrait_id, "face_box": self.face_box, "face": self.face,
                "faces": self.faces, "image_size": [w, h], "crop_size": int(self.crop.shape[0])}


def content_id(data: bytes, face: int | None = None, secret: bytes | None = None) -> str:
    """The portrait id: HMAC-SHA256 with ``secret`` (the deployment's, :mod:`serve.store`) of the
    uploaded bytes and the face asked for, so nobody can tell an id from the photo alone; plain
    SHA-256 without a secret (benchmarks, tests). 64 hex digits either way."""
    digest = hmac.new(secret, data, hashlib.sha256) if secret else hashlib.sha256(data)
    if face is not None:
        digest.update(f"#face={face}".encode())
    return digest.hexdigest()


def find_face(image: np.ndarray, face: int | None = None, framing: tuple[int, float] | None = None) -> Any:
    """``disenttalk.face.portrait.Portrait`` of the chosen face, cut with ``framing`` (crop size,
    margin; default: preprocessing's); 422 with the reason if none is usable."""
    from disenttalk.face.crop import framing as default_framing
    from disenttalk.face.portrait import NoUsableFace, prepare_portrait

    size, margin = framing or default_framing()
    try:
        return prepare_portrait(image, face, size=size, margin=margin)
    except NoUsableFace as exc:
        raise ApiError(422, REASONS.get(exc.reason, "no_face"), str(exc), field="image") from None


def prepare(portrait_id: str, photo: np.ndarray, face: int | None = None,
            framing: tuple[int, float] | None = None) -> Portrait:
    """Find, check and crop the face of ``photo`` (``framing`` as in :func:`find_face`)."""
    from disenttalk.face.crop import framing as default_framing

    framing = framing or default_framing()
    found = find_face(photo, face, framing)
    return Portrait(portrait_id=portrait_id, photo=photo, crop=found.crop,
                    crop_landmarks=np.asarray(found.landmarks, np.float32), transform=found.transform,
                    face=found.index, faces=[f.to_dict() for f in found.faces], framing=framing)


def reframed(portrait: Portrait, framing: tuple[int, float]) -> Portrait:
    """``portrait`` cut again with another model's ``framing`` (same face), under its own id."""
    if tuple(portrait.framing) == tuple(framing):
        return portrait
    return prepare(f"{portrait.portrait_id}:{framing[0]}:{framing[1]}", portrait.photo, portrait.face, framing)
