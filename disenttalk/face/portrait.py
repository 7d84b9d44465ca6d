"""A user's photo → the face crop the model animates, and how to put the animation back.

``prepare_portrait(image)`` finds every face (``disenttalk.face.detect``), picks the largest
usable one (or the one asked for), cuts it out as the square crop the model was trained on
(landmark box widened by the preprocessing margin) and tracks the crop itself, so the renderer
gets landmarks that match the pixels it warps. The result says which face was used and lists
them all, so a caller can offer the others.

A tight crop (an avatar, an aligned 112 px face: forehead, chin or ears outside the photo) is
animated as long as the eyes, the mouth and the jaw under it are inside: the crop square then
reaches past the photo, that part is the photo's border carried outward and smoothed
(:meth:`CropTransform.crop`), a still ring the renderer leaves alone, and pasting back writes only
the photo's own pixels. When what moves is outside, :class:`NoUsableFace` names it ("its mouth is
outside the photo").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from disenttalk.face.crop import CropTransform, crop_boxes
from disenttalk.face.detect import (
    ROTATIONS,
    Face,
    FaceFinder,
    NoUsableFace,
    choose_face,
)

__all__ = ["NoUsableFace", "Portrait", "prepare_portrait", "sharp_crop"]

SHARP_MAX_PX = 640  # the sharp crop's largest side: 6.25× the pixels of a 256 crop to render


@dataclass
class Portrait:
    """The crop to animate (uint8 [S,S,3]), its landmarks [478,3] and where it sits in the photo."""

    crop: np.ndarray = field(repr=False)
    landmarks: np.ndarray = field(repr=False)
    transform: CropTransform = field(repr=False)  # one frame: photo ↔ crop
    index: int  # which of ``faces`` was used
    faces: list[Face]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x, y, w, h) in photo pixels of the face that is animated."""
        return self.faces[self.index].box

    def paste(self, photo: np.ndarray, frames: np.ndarray, still: np.ndarray | None = None) -> np.ndarray:
        """Animated crops [T,S,S,3] put back into copies of the photo → [T,H,W,3]; with ``still``
        (the crop they were drawn on) only what moved is pasted, the rest stays the photo's own."""
        t = len(frames)
        full = CropTransform(centres=np.repeat(self.transform.centres, t, 0),
                             sides=np.repeat(self.transform.sides, t, 0),
                             size=self.transform.size, frame_shape=self.transform.frame_shape)
        return full.paste(np.repeat(np.asarray(photo)[None], t, 0), frames, still=still)

    def sharp_crop(self, photo: np.ndarray, max_size: int = SHARP_MAX_PX) -> np.ndarray | None:
        """:func:`sharp_crop` of this portrait's box."""
        return sharp_crop(photo, self.transform, self.crop.shape[0], max_size)

    def to_dict(self) -> dict:
        """JSON-friendly: the face used (index, box) and every face found."""
        return {"face": self.index, "box": [int(round(v)) for v in self.box],
                "faces": [f.to_dict() for f in self.faces]}


def sharp_crop(photo: np.ndarray, transform: CropTransform, size: int,
               max_size: int = SHARP_MAX_PX) -> np.ndarray | None:
    """The crop of ``transform``'s box (one frame) at up to the photo's own resolution, at most
    ``max_size`` px, or None when that is not sharper than ``size`` px by a quarter.

    The model works on ``size``-px crops; rendering those and pasting them back into a photo whose
    face box is 300–600 px keeps 5–30 % of the face's fine detail (Laplacian variance) even where
    nothing moves. Rendering the same motion on this crop (landmarks scaled by its size over
    ``size``) keeps the photo's own detail."""
    from dataclasses import replace

    side = int(round(min(float(transform.sides[0]), max_size)))
    if side < 1.25 * size:
        return None
    return replace(transform, size=side).crop(np.asarray(photo)[None])[0]


def on_pixels(transform: CropTransform) -> CropTransform:
    """The same box (one frame) with a whole number of pixels a side starting on a pixel, so a
    crop of it at its own side (``sharp_crop``) is the photo's pixels copied, not resampled, and
    pastes back onto them exactly."""
    from dataclasses import replace

    side = float(max(np.round(transform.sides[0]), 1.0))
    corner = np.floor(transform.centres[0] - side / 2 + 0.5)
    return replace(transform, centres=(corner + side / 2)[None], sides=np.array([side]))


def prepare_portrait(image: np.ndarray, face_index: int | None = None, *, size: int = 256,
                     margin: float = 0.3, min_confidence: float = 0.5) -> Portrait:
    """Find the faces in an RGB uint8 photo and crop the chosen one (default: the largest usable).

    ``face_index`` counts faces left to right as listed in ``Portrait.faces``. Raises
    :class:`NoUsableFace` (``reason``: no_face, rotated, too_small, cut_off, no_landmarks,
    bad_index) when there is nothing to animate; ``cut_off`` faces name what is outside
    (``Face.outside``: eyes, mouth, the jaw under it). The crop may reach past the photo (a
    tight crop); ``transform.outside()`` says how much of it does.
    """
    from disenttalk.face.tracker import FaceTracker

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H,W,3] RGB image, got {image.dtype} {image.shape}")
    with FaceFinder(min_confidence) as finder:
        faces = finder.find(image)
        turns = None
        if face_index is None and all(f.problem in (None, "rotated", "no_landmarks") and not f.usable
                                      for f in faces):
            turns = finder.photo_turns(image)  # nothing upright: is the photo itself turned?
    if turns is not None:
        raise NoUsableFace("rotated", f"no upright face found; the photo looks {ROTATIONS[turns]} "
                           "(faces are found when it is turned): turn it upright and try again",
                           faces)
    index = choose_face(faces, face_index)
    landmarks = faces[index].landmarks
    transform = on_pixels(crop_boxes(landmarks[None], image.shape[:2], size=size, margin=margin,
                                     smooth=0))
    crop = transform.crop(image[None])[0]
    expected = transform.apply(landmarks[None])[0]
    # Track the crop itself: the renderer needs landmarks that match the pixels it warps.
    with FaceTracker(static=True, max_faces=2, min_confidence=min_confidence) as tracker:
        tracked = tracker.track_image_all(crop)
    # A neighbour's face may reach into the crop: keep the one where the chosen face is.
    near = [lm for lm in tracked if np.abs(lm[:, :2] - expected[:, :2]).mean() < 0.1 * size]
    crop_landmarks = min(near, key=lambda lm: np.abs(lm[:, :2] - expected[:, :2]).mean()) if near else expected
    return Portrait(crop=crop, landmarks=np.asarray(crop_landmarks, np.float32), transform=transform,
                    index=index, faces=faces)
