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
detector finds anything is tried again inside a padded border. When nothing is detected upright, the photo is tried turned by 90°, 180° and
270°, so a sideways or upside-down photo is named as such instead of "no face".
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from disenttalk.face import topology as topo
from disenttalk.face.crop import CropTransform

MIN_FACE_PX = 40  # narrower detections are listed but not animated: too little detail to warp
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
# What must be inside the photo for a face to be animated: what moves. The eyelids close, the
# lips part and the jaw under the lower lip drops with them; the forehead, the chin's tip, the
# ears may lie outside (a tight crop), where the crop is padded and nothing is pasted back.
MUST_SHOW = {
    "eyes": topo.RIGHT_EYE + topo.LEFT_EYE,
    "mouth": topo.unique(topo.LIPS_OUTER_UPPER, topo.LIPS_OUTER_LOWER),
    "jaw": (18, 200),  # the midline under the lower lip, about 40 % of the way to the chin's tip
}
# the detector's keypoints (RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH_CENTER, ears) that stand for
# MUST_SHOW's parts when FaceMesh has nothing to say
_KEYPOINT_PARTS = {"eyes": (0, 1), "mouth": (3,)}
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
    ``no_landmarks``, ``rotated``); ``outside`` names the parts a ``cut_off`` face has outside
    the photo (``eyes``, ``eye``, ``mouth``, ``jaw``: see :data:`MUST_SHOW`).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = field(default=None, repr=False)
    problem: str | None = None
    turns: int = 0  # quarter turns (np.rot90) that would put this face upright
    keypoints: np.ndarray | None = field(default=None, repr=False)  # the detector's 6 points [6,2], photo px
    outside: tuple[str, ...] = ()  # what of a cut-off face is outside the photo

    @property
    def usable(self) -> bool:
        """Whether this face can be animated."""
        return self.problem is None

    @property
    def roll(self) -> float:
        """In-plane rotation in degrees (0 upright, ±180 upside down) from forehead → chin; NaN without landmarks."""
        return float("nan") if self.landmarks is None else _roll(self.landmarks)

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


def detect(image: np.ndarray, detector) -> list[tuple[tuple[float, float, float, float], float, np.ndarray]]:
    """Face boxes (x, y, w, h) in pixels, scores and keypoints [6,2] (pixels) in an RGB uint8 image."""
    from disenttalk.face.tracker import quiet_native_logs

    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    out = []
    with quiet_native_logs():
        result = detector.process(image)
    for det in result.detections or ():
        b = det.location_data.relative_bounding_box
        points = np.array([[k.x * w, k.y * h] for k in det.location_data.relative_keypoints], np.float32)
        out.append(((b.xmin * w, b.ymin * h, b.width * w, b.height * h), float(det.score[0]),
                    points.reshape(-1, 2)))
    return out


def detect_boxes(image: np.ndarray, detector) -> list[tuple[tuple[float, float, float, float], float]]:
    """Face boxes (x, y, w, h) in pixels and scores in an RGB uint8 image."""
    return [(box, score) for box, score, _ in detect(image, detector)]


def padded(image: np.ndarray, pad: int) -> np.ndarray:
    """``image`` inside a square canvas ``pad`` px wider than its larger side on each side, its own
    pixels at (x, y) + its offset (``(side − w) // 2``, ``(side − h) // 2``) and its border carried
    outward (:meth:`CropTransform.crop`'s padding)."""
    h, w = image.shape[:2]
    side = max(h, w) + 2 * pad
    ox, oy = (side - w) // 2, (side - h) // 2
    canvas = CropTransform(centres=np.array([[side / 2 - ox, side / 2 - oy]]), sides=np.array([float(side)]),
                           size=side, frame_shape=(h, w))
    return canvas.crop(np.asarray(image)[None])[0]


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
                 and not any(_same_face(f[0], d[0]) for f in full)]
        kept = [f for f in full if not any(_centre_in(f[0], c[0]) and f[0][2] < 0.5 * c[0][2] for c in close)]
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
            if _outside_fraction(box, shape) > MAX_OUTSIDE:
                face.outside = _keypoints_outside(points, shape)
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
            face.outside = (_keypoints_outside(points, shape) if face.landmarks is None
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


def _outside_fraction(box: tuple[float, float, float, float], shape: tuple[int, int]) -> float:
    """Share of a box's area that lies outside an image of ``shape`` (H, W)."""
    x, y, bw, bh = box
    h, w = shape
    inside_w = max(0.0, min(x + bw, w) - max(x, 0.0))
    inside_h = max(0.0, min(y + bh, h) - max(y, 0.0))
    return 1.0 - inside_w * inside_h / max(bw * bh, 1e-6)


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


def _roll(landmarks: np.ndarray) -> float:
    """In-plane rotation in degrees of landmarks [478,≥2] (0 upright), from forehead → chin."""
    dx, dy = landmarks[topo.CHIN, :2] - landmarks[topo.FOREHEAD, :2]
    return float(np.degrees(np.arctan2(-dx, dy)))


def _centre_in(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Whether box ``a``'s centre lies in box ``b`` (x, y, w, h)."""
    cx, cy = a[0] + a[2] / 2, a[1] + a[3] / 2
    return b[0] <= cx <= b[0] + b[2] and b[1] <= cy <= b[1] + b[3]


def _same_face(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    """Whether two detections are one face: either centre in the other box, widths within 2×."""
    return (_centre_in(a, b) or _centre_in(b, a)) and 0.5 <= a[2] / max(b[2], 1e-6) <= 2.0


def find_faces(image: np.ndarray, min_confidence: float = 0.5) -> list[Face]:
    """Every face found in an RGB uint8 photo, left to right, each with landmarks or a problem."""
    with FaceFinder(min_confidence) as finder:
        return finder.find(image)


def _within(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Which of ``points`` [N,2] (pixels) lie within an image of ``shape`` (H, W)."""
    h, w = shape
    return (points[:, 0] >= 0) & (points[:, 0] <= w) & (points[:, 1] >= 0) & (points[:, 1] <= h)


def parts_outside(landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[str, ...]:
    """The parts of :data:`MUST_SHOW` that reach outside an image of ``shape`` (H, W): ``eyes``
    (``eye`` when one is in), ``mouth``, ``jaw``; () for a face that can be animated."""
    out = []
    for part, points in MUST_SHOW.items():
        if part == "eyes":
            eyes = [_within(landmarks[list(eye), :2], shape).all() for eye in (topo.RIGHT_EYE, topo.LEFT_EYE)]
            if not all(eyes):
                out.append("eye" if any(eyes) else "eyes")
        elif part == "jaw" and "mouth" in out:
            continue  # said with the mouth
        elif not _within(landmarks[list(points), :2], shape).all():
            out.append(part)
    return tuple(out)


def _keypoints_outside(points: np.ndarray | None, shape: tuple[int, int]) -> tuple[str, ...]:
    """:func:`parts_outside` judged by the detector's keypoints (eyes, mouth centre) alone."""
    if points is None or len(points) < 4:
        return ()
    eyes = _within(points[list(_KEYPOINT_PARTS["eyes"])], shape)
    out = [] if eyes.all() else ["eye" if eyes.any() else "eyes"]
    return tuple(out + ([] if _within(points[list(_KEYPOINT_PARTS["mouth"])], shape).all() else ["mouth"]))


_PART_WORDS = {"eyes": "its eyes", "eye": "one of its eyes", "mouth": "its mouth",
               "jaw": "its jaw under the mouth"}


def outside_words(parts: tuple[str, ...]) -> str:
    """``("eyes", "mouth")`` → "its eyes and its mouth are outside the photo"."""
    words = [_PART_WORDS[p] for p in parts]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    plural = len(words) > 1 or parts == ("eyes",)
    return f"{listed} {'are' if plural else 'is'} outside the photo"


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
        "cut_off": (f"{outside_words(face.outside)} (cut off at the image border; the eyes, mouth and "
                    "jaw must be in the picture)" if face.outside else "it is cut off at the image border"),
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
