"""Faces in ordinary photos: MediaPipe's full-range face detector, then FaceMesh on each face.

FaceMesh alone (static mode) runs its own short-range detector on the whole image, which misses
faces that are small in the picture (a group photo: ~100 px faces in 1280×886). Here the
full-range BlazeFace detector (``FaceDetection(model_selection=1)``, bundled in the mediapipe
wheel) finds the faces; each one is cut out as a square around its box (upscaled when small),
FaceMesh runs on that crop, and its landmarks are mapped back to photo pixels.

Every detected face is reported with a box and, when it cannot be animated, the reason: too
small, cut off at the image border, or landmarks not found. When nothing is detected upright,
the photo is tried turned by 90°, 180° and 270°, so a sideways or upside-down photo is named as
such instead of "no face".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from disenttalk.face import topology as topo
from disenttalk.face.crop import CropTransform

MIN_FACE_PX = 40  # narrower detections are listed but not animated: too little detail to warp
MESH_INPUT_PX = 384  # a face's crop is resampled to this side before FaceMesh runs on it
MESH_CONTEXT = 2.0  # crop side = detection box side × this (FaceMesh wants the face mid-frame)
# share of the face box that may lie outside the image before FaceMesh is tried at all; below it
# the landmarks decide (eyes, lips, nose tip and chin inside): a tight crop of a face, forehead
# cut off, has ~20 % of its box outside and is whole where it matters
MAX_OUTSIDE = 0.4
MAX_ROLL_DEG = 45.0  # the renderer paints lips and lids as curves over columns: faces near upright
SHORT_RANGE_TURNED = 0.75  # short-range detections in a turned photo count from this score up
# Landmarks that must land inside the image for a face to count as whole: eye corners, lips, chin.
_KEY_POINTS = (*topo.MOUTH_CORNERS, topo.RIGHT_EYE_OUTER, topo.LEFT_EYE_OUTER, 133, 362, 13, 14,
               topo.CHIN, topo.NOSE_TIP)
# np.rot90(photo, k) puts the faces upright → how the photo is turned
ROTATIONS = {1: "turned 90° clockwise", 2: "upside down", 3: "turned 90° anticlockwise"}


class NoUsableFace(ValueError):
    """A photo with no face that can be animated; ``reason`` is a short code, the message says why.

    Codes: ``no_face``, ``too_small``, ``cut_off``, ``rotated``, ``no_landmarks``, ``bad_index``
    (``rotated``: a face lies sideways or upside down).
    """

    def __init__(self, reason: str, message: str, faces: list[Face] | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.faces = faces or []


@dataclass
class Face:
    """One face found in a photo: box (x, y, w, h) in photo pixels, detector score, landmarks.

    ``landmarks`` [478,3] are photo pixels (None when FaceMesh found none); ``problem`` is None
    for a face that can be animated, else a reason code (``too_small``, ``cut_off``,
    ``no_landmarks``, ``rotated``).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = field(default=None, repr=False)
    problem: str | None = None
    turns: int = 0  # quarter turns (np.rot90) that would put this face upright

    @property
    def usable(self) -> bool:
        """Whether this face can be animated."""
        return self.problem is None

    @property
    def roll(self) -> float:
        """In-plane rotation in degrees (0 upright, ±180 upside down) from forehead → chin; NaN without landmarks."""
        if self.landmarks is None:
            return float("nan")
        dx, dy = self.landmarks[topo.CHIN, :2] - self.landmarks[topo.FOREHEAD, :2]
        return float(np.degrees(np.arctan2(-dx, dy)))

    @property
    def width(self) -> float:
        """Box width in photo pixels."""
        return self.box[2]

    def to_dict(self) -> dict:
        """JSON-friendly summary: box as whole pixels, score, usable, problem."""
        return {"box": [int(round(v)) for v in self.box], "score": round(float(self.score), 3),
                "usable": self.usable, "problem": self.problem}


def _detector(min_confidence: float, full_range: bool = True):
    from disenttalk.face.tracker import import_mediapipe, quiet_native_logs

    mp = import_mediapipe()

    with quiet_native_logs():
        return mp.solutions.face_detection.FaceDetection(
            model_selection=1 if full_range else 0, min_detection_confidence=min_confidence)


def detect_boxes(image: np.ndarray, detector) -> list[tuple[tuple[float, float, float, float], float]]:
    """Face boxes (x, y, w, h) in pixels and scores in an RGB uint8 image."""
    from disenttalk.face.tracker import quiet_native_logs

    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    out = []
    with quiet_native_logs():
        result = detector.process(image)
    for det in result.detections or ():
        b = det.location_data.relative_bounding_box
        out.append(((b.xmin * w, b.ymin * h, b.width * w, b.height * h), float(det.score[0])))
    return out


class FaceFinder:
    """The detectors and FaceMesh graph :func:`find_faces` uses; ``close()`` (or ``with``) frees them.

    Full-range BlazeFace finds faces at any size in the picture; the short-range model finds the
    close-ups it misses (a face filling the frame) and, run on a face's own crop turned by
    0/90/180/270°, tells which way up the face is (it scores the upright face highest).
    """

    def __init__(self, min_confidence: float = 0.5) -> None:
        from disenttalk.face.tracker import FaceTracker

        self.min_confidence = min_confidence
        self.full = _detector(min_confidence, full_range=True)
        self.short = _detector(min_confidence, full_range=False)
        self.mesh = FaceTracker(static=True, max_faces=3, min_confidence=min_confidence)

    def boxes(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """Full-range detections, or the short-range ones when the full-range model finds none."""
        return detect_boxes(image, self.full) or detect_boxes(image, self.short)

    def face_crop(self, image: np.ndarray, box: tuple[float, float, float, float]):
        """(crop uint8 [S,S,3], CropTransform) of a square MESH_CONTEXT × the box around it."""
        x, y, bw, bh = box
        transform = CropTransform(centres=np.array([[x + bw / 2, y + bh / 2]]),
                                  sides=np.array([max(bw, bh) * MESH_CONTEXT]), size=MESH_INPUT_PX,
                                  frame_shape=image.shape[:2])
        return transform.crop(image[None])[0], transform

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
        for box, score in self.boxes(image):
            face = Face(box=box, score=score)
            faces.append(face)
            if box[2] < MIN_FACE_PX:
                face.problem = "too_small"
                continue
            if _outside_fraction(box, shape) > MAX_OUTSIDE:
                face.problem = "cut_off"
                continue
            crop, transform = self.face_crop(image, box)
            face.turns = self.turns(crop)
            if face.turns:
                # turned, if FaceMesh agrees: on paintings and masks the detector can prefer a
                # turned crop that holds no face either way up ("its landmarks were not found")
                confirmed = self._central_mesh(np.rot90(crop, face.turns)) is not None
                face.problem = "rotated" if confirmed else "no_landmarks"
                face.turns = face.turns if confirmed else 0
                continue
            face.landmarks = self.mesh_in(crop, transform)
            if face.landmarks is None:
                face.problem = "no_landmarks"
            elif not _inside(face.landmarks, shape):
                face.problem = "cut_off"
            elif abs(face.roll) > MAX_ROLL_DEG:
                face.problem = "rotated"
        return sorted(faces, key=lambda f: (f.box[0], f.box[1]))

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


def _outside_fraction(box: tuple[float, float, float, float], shape: tuple[int, int]) -> float:
    """Share of a box's area that lies outside an image of ``shape`` (H, W)."""
    x, y, bw, bh = box
    h, w = shape
    inside_w = max(0.0, min(x + bw, w) - max(x, 0.0))
    inside_h = max(0.0, min(y + bh, h) - max(y, 0.0))
    return 1.0 - inside_w * inside_h / max(bw * bh, 1e-6)


def find_faces(image: np.ndarray, min_confidence: float = 0.5) -> list[Face]:
    """Every face found in an RGB uint8 photo, left to right, each with landmarks or a problem."""
    with FaceFinder(min_confidence) as finder:
        return finder.find(image)


def _inside(landmarks: np.ndarray, shape: tuple[int, int]) -> bool:
    """Whether the eyes, nose, lips and chin all lie within the image."""
    h, w = shape
    key = landmarks[list(_KEY_POINTS), :2]
    return bool((key[:, 0] >= 0).all() and (key[:, 0] <= w).all()
                and (key[:, 1] >= 0).all() and (key[:, 1] <= h).all())


def choose_face(faces: list[Face], index: int | None = None) -> int:
    """The index of the face to animate: ``index`` if given (and usable), else the largest usable one."""
    if index is not None:
        if not 0 <= index < len(faces):
            raise NoUsableFace("bad_index", f"face {index} asked for, but the photo has "
                               f"{len(faces)} face(s) (0..{len(faces) - 1})", faces)
        if not faces[index].usable:
            raise NoUsableFace(faces[index].problem or "no_face",
                               f"face {index} cannot be animated: {describe(faces[index])}", faces)
        return index
    usable = [i for i, f in enumerate(faces) if f.usable]
    if not usable:
        raise NoUsableFace(*_why_none(faces), faces)
    return max(usable, key=lambda i: faces[i].box[2] * faces[i].box[3])


def describe(face: Face) -> str:
    """One line on why a face is not usable."""
    w = int(round(face.width))
    return {
        "too_small": f"it is {w} px wide, too small to animate (need at least {MIN_FACE_PX} px)",
        "cut_off": "it is cut off at the image border",
        "no_landmarks": f"its landmarks were not found ({w} px wide; turned away or covered?)",
        "rotated": f"it is {ROTATIONS.get(face.turns, 'tilted')}"
        + ("" if face.turns else f" ({abs(face.roll):.0f}° from upright)"),
    }.get(face.problem or "", "it is usable")


def _why_none(faces: list[Face]) -> tuple[str, str]:
    """(reason code, message) for a photo whose faces are all unusable (or that has none)."""
    if not faces:
        return "no_face", "no face found in the image"
    problems = [f.problem for f in faces]
    reason = max(set(problems), key=problems.count)
    if len(faces) == 1:
        return reason, f"a face was found but {describe(faces[0])}"
    details = "; ".join(f"face {i}: {describe(f)}" for i, f in enumerate(faces))
    return reason, f"{len(faces)} faces found, none usable ({details})"
