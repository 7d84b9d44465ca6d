"""A face found in a photo and whether it can be animated: its box, score and landmarks, what of
it lies outside the photo, the reason it cannot be animated in words, and which face to animate.

What must be inside the photo is what moves (:data:`MUST_SHOW`): eyes, mouth and the jaw under
the mouth; a tight crop (forehead, chin or ears outside the frame) is fine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from disenttalk.face import topology as topo

MIN_FACE_PX = 40  # narrower detections are listed but not animated: too little detail to warp
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



def _roll(landmarks: np.ndarray) -> float:
    """In-plane rotation in degrees of landmarks [478,≥2] (0 upright), from forehead → chin."""
    dx, dy = landmarks[topo.CHIN, :2] - landmarks[topo.FOREHEAD, :2]
    return float(np.degrees(np.arctan2(-dx, dy)))


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


def keypoints_outside(points: np.ndarray | None, shape: tuple[int, int]) -> tuple[str, ...]:
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
