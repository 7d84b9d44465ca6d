"""Faces in ordinary photos: MediaPipe's full-range face detector, then FaceMesh on each face.

FaceMesh alone (static mode) runs its own short-range detector on the whole image, which misses
faces that are small in the picture (a group photo: ~100 px faces in 1280×886). Here the
full-range BlazeFace detector (``FaceDetection(model_selection=1)``, bundled in the mediapipe
wheel) finds the faces; each one is cut out as a square around its box (upscaled when small),
FaceMesh runs on that crop, and its landmarks are mapped back to photo pixels.

Every detected face is reported with a box and, when it cannot be animated, the reason: too
small, cut off at the image border (the part of it that must move, eyes, mouth or the jaw under
the mouth, is outside the photo; the message names it), or landmarks not found. A tight crop
(an avatar: forehead, chin or ears outside the frame) is fine: only what moves must be inside,
and the crop's part outside the photo is padded from the photo's border. On a photo that is
nearly all face (cut between the brows and the chin) the full-range detector may miss the face
or fire on a part of it: a short-range close-up is then kept too, and a photo in which neither
detector finds anything is tried again inside a padded border. When nothing is detected
upright, the photo is tried turned by 90°, 180° and 270°, so a sideways or upside-down photo is
named as such instead of "no face".

This module runs the search (:class:`FaceFinder`, :func:`find_faces`); the detectors and box
geometry are in :mod:`disenttalk.face.blazeface`, the :class:`Face` record, the reasons a face
cannot be animated and the choice of face in :mod:`disenttalk.face.found` (their names are
importable from here too).
"""

from __future__ import annotations

import numpy as np

from disenttalk.face.blazeface import (
    centre_in,
    detect,
    detect_boxes,
    detector,
    outside_fraction,
    padded,
    same_face,
)
from disenttalk.face.crop import CropTransform
from disenttalk.face.found import (
    MIN_FACE_PX,
    MUST_SHOW,
    ROTATIONS,
    Face,
    NoUsableFace,
    choose_face,
    describe,
    keypoints_outside,
    outside_words,
    parts_outside,
)

__all__ = [
    "MIN_FACE_PX",
    "MUST_SHOW",
    "ROTATIONS",
    "Face",
    "FaceFinder",
    "NoUsableFace",
    "choose_face",
    "describe",
    "detect",
    "detect_boxes",
    "find_faces",
    "outside_words",
    "padded",
    "parts_outside",
]

MESH_INPUT_PX = 384  # a face's crop is resampled to this side before FaceMesh runs on it
MESH_CONTEXT = 2.0  # crop side = detection box side × this (FaceMesh wants the face mid-frame)
# share of the face box that may lie outside the image before the detector's own eye and mouth
# points are asked whether FaceMesh is worth trying; below it the landmarks decide: a tight crop
# of a face, forehead cut off, has ~20 % of its box outside and is whole where it matters
MAX_OUTSIDE = 0.4
# a short-range detection at least this share of the photo's smaller side wide is a close-up: kept
# even when the full-range model finds something else (on a tight crop it can miss the face)
CLOSE_UP = 0.5
# a photo where neither detector finds a face is tried again inside a border this share of its
# larger side wide (its own edge carried outward): the detectors want some room around a face,
# and a crop from the brows to under the lips has none
RETRY_PAD = 0.25
MAX_ROLL_DEG = 45.0  # the renderer paints lips and lids as curves over columns: faces near upright
SHORT_RANGE_TURNED = 0.75  # short-range detections in a turned photo count from this score up


class FaceFinder:
    """The detectors and FaceMesh graph :func:`find_faces` uses; ``close()`` (or ``with``) frees them.

    Full-range BlazeFace finds faces at any size in the picture; the short-range model finds the
    close-ups it misses (a face filling the frame) and, run on a face's own crop turned by
    0/90/180/270°, tells which way up the face is (it scores the upright face highest).
    """

    def __init__(self, min_confidence: float = 0.5) -> None:
        from disenttalk.face.tracker import FaceTracker

        self.min_confidence = min_confidence
        self.full = detector(min_confidence, full_range=True)
        self.short = detector(min_confidence, full_range=False)
        self.mesh = FaceTracker(static=True, max_faces=3, min_confidence=min_confidence)

    def boxes(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float, np.ndarray]]:
        """Detections (box, score, keypoints): the full-range model's, or the short-range ones
        when it finds none; when neither finds a face, both again on the photo inside a border
        (:data:`RETRY_PAD`), mapped back to the photo's pixels."""
        found = self._detections(image)
        if found:
            return found
        h, w = image.shape[:2]
        pad = int(np.ceil(RETRY_PAD * max(h, w)))
        canvas = padded(image, pad)
        offset = np.array([(canvas.shape[1] - w) // 2, (canvas.shape[0] - h) // 2], np.float32)
        found = detect(canvas, self.full) or detect(canvas, self.short)
        return [((x - offset[0], y - offset[1], bw, bh), score, points - offset)
                for (x, y, bw, bh), score, points in found]

    def _detections(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float, np.ndarray]]:
        """Full-range detections, or the short-range ones when there are none. A short-range
        close-up (a face filling the photo, :data:`CLOSE_UP`) that no full-range box found is
        added, and full-range boxes much smaller than it on it (a false face in a face) dropped:
        on tight crops the full-range model misses the face or fires on a part of it."""
        full, short = detect(image, self.full), detect(image, self.short)
        if not full:
            return short
        h, w = image.shape[:2]
        close = [d for d in short if d[0][2] >= CLOSE_UP * min(h, w)
                 and not any(same_face(f[0], d[0]) for f in full)]
        kept = [f for f in full if not any(centre_in(f[0], c[0]) and f[0][2] < 0.5 * c[0][2] for c in close)]
        return kept + close

    def face_crop(self, image: np.ndarray, box: tuple[float, float, float, float]):
        """(crop uint8 [S,S,3], CropTransform) of a square MESH_CONTEXT × the box around it.

        Past the photo's edge the crop repeats the edge's pixels: what FaceMesh and the turn test
        were tuned on (a painted face reads upside down to FaceMesh on the smoothed padding)."""
        x, y, bw, bh = box
        transform = CropTransform(centres=np.array([[x + bw / 2, y + bh / 2]]),
                                  sides=np.array([max(bw, bh) * MESH_CONTEXT]), size=MESH_INPUT_PX,
                                  frame_shape=image.shape[:2])
        return transform.crop(image[None], smooth_outside=False)[0], transform

    def turns(self, crop: np.ndarray) -> int:
        """Quarter turns k that put the face in the middle of ``crop`` upright (``np.rot90(crop, k)``)."""
        scores = []
        for k in range(4):
            found = detect_boxes(np.rot90(crop, k), self.short)
            scores.append(max((s for _, s in found), default=0.0))
        best = int(np.argmax(scores))
        return best if scores[best] > scores[0] + 0.02 else 0

    def mesh_in(self, crop: np.ndarray, transform: CropTransform) -> np.ndarray | None:
        """FaceMesh landmarks [478,3] (photo pixels) of the face in the middle of its crop."""
        best = self._central_mesh(crop)
        return None if best is None else transform.invert(best[None])[0]

    def _central_mesh(self, crop: np.ndarray) -> np.ndarray | None:
        """FaceMesh landmarks [478,3] (crop pixels) of the face in the middle of ``crop``, or None."""
        faces = self.mesh.track_image_all(np.ascontiguousarray(crop))
        if not faces:
            return None
        # In a crowd the crop can hold a neighbour too: take the face nearest the crop's centre.
        mid = MESH_INPUT_PX / 2
        best = min(faces, key=lambda lm: float(np.linalg.norm(lm[:, :2].mean(0) - mid)))
        if np.linalg.norm(best[:, :2].mean(0) - mid) > 0.25 * MESH_INPUT_PX:
            return None  # a neighbour, not the detected face
        return best

    def find(self, image: np.ndarray) -> list[Face]:
        """See :func:`find_faces`."""
        image = np.ascontiguousarray(image)
        shape = image.shape[:2]
        faces = []
        for box, score, points in self.boxes(image):
            face = Face(box=box, score=score, keypoints=points)
            faces.append(face)
            if box[2] < MIN_FACE_PX:
                face.problem = "too_small"
                continue
            # a box mostly outside the photo: FaceMesh only if the detector sees eyes and mouth inside
            if outside_fraction(box, shape) > MAX_OUTSIDE:
                face.outside = keypoints_outside(points, shape)
                if face.outside:
                    face.problem = "cut_off"
                    continue
            crop, transform = self.face_crop(image, box)
            face.turns = self.turns(crop)
            if face.turns:
                # turned, if FaceMesh agrees: on paintings, masks and faces cut at the border the
                # detector can prefer a turned crop that holds no face that way up; those are
                # judged upright (their landmarks, or why there are none)
                if self._central_mesh(np.rot90(crop, face.turns)) is not None:
                    face.problem = "rotated"
                    continue
                face.turns = 0
            face.landmarks = self.mesh_in(crop, transform)
            # no landmarks: because the eyes or mouth are outside (the detector's points say), or not
            face.outside = (keypoints_outside(points, shape) if face.landmarks is None
                            else parts_outside(face.landmarks, shape))
            if face.outside:
                face.problem = "cut_off"
            elif face.landmarks is None:
                face.problem = "no_landmarks"
            elif abs(face.roll) > MAX_ROLL_DEG:
                face.problem = "rotated"
        return sorted(_distinct(faces), key=lambda f: (f.box[0], f.box[1]))

    def photo_turns(self, image: np.ndarray) -> int | None:
        """For a photo with no usable upright face: quarter turns k that show faces upright, or None.

        Each turn is scored by the detections in the turned photo whose own crop reads upright
        there; the short-range model counts only when confident (it also fires on textures).
        """
        totals = {}
        for k in (1, 2, 3):
            turned = np.ascontiguousarray(np.rot90(image, k))
            found = detect_boxes(turned, self.full) or [
                (box, score) for box, score in detect_boxes(turned, self.short) if score >= SHORT_RANGE_TURNED]
            totals[k] = sum(score for box, score in found if box[2] >= MIN_FACE_PX
                            and self.turns(self.face_crop(turned, box)[0]) == 0)
        best = max(totals, key=totals.get)
        return best if totals[best] > 0 else None

    def close(self) -> None:
        """Release the MediaPipe graphs."""
        for graph in (self.full, self.short, self.mesh):
            graph.close()

    def __enter__(self) -> FaceFinder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()



def _distinct(faces: list[Face]) -> list[Face]:
    """``faces`` less the ones whose landmarks are another's (two boxes on one face: the
    full-range and a short-range close-up box); the higher-scored box of a face stays."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: -f.score):
        lm = face.landmarks
        if lm is None or not any(
                k.landmarks is not None
                and np.linalg.norm(lm[:, :2].mean(0) - k.landmarks[:, :2].mean(0)) < 0.1 * np.ptp(lm[:, 0])
                for k in kept):
            kept.append(face)
    return kept



def find_faces(image: np.ndarray, min_confidence: float = 0.5) -> list[Face]:
    """Every face found in an RGB uint8 photo, left to right, each with landmarks or a problem."""
    with FaceFinder(min_confidence) as finder:
        return finder.find(image)
