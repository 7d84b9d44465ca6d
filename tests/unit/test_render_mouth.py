"""The mouth interior's anatomy and the pixels the warp leaves alone, read from rendered frames.

The upper teeth belong to the skull and the lower teeth to the jaw: moving the upper lip uncovers
the upper teeth without moving them, dropping the jaw carries the lower teeth with the chin and
leaves the upper ones where they were. Pixels the motion does not reach are the photo's own.
"""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.face import topology as topo
from disenttalk.face.editors import close_eyes, open_mouth
from disenttalk.render import RenderConfig, WarpRenderer

LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def renderer(astronaut_256):
    """The renderer of the 256² astronaut (``tests/conftest.py``)."""
    return WarpRenderer(*astronaut_256)


def moved(landmarks: np.ndarray, points, dy: float) -> np.ndarray:
    out = landmarks.copy()
    out[list(points), 1] += dy
    return out


def lower_face(landmarks: np.ndarray) -> list[int]:
    """Points of the lower lip, chin and jaw: everything clearly below the lip line."""
    line = landmarks[list(topo.MOUTH_CORNERS), 1].mean()
    below = np.flatnonzero(landmarks[:, 1] > line + 2.0)
    return sorted(set(below) - set(topo.LIPS_INNER_UPPER) - set(topo.LIPS_OUTER_UPPER))


def opening_column(target: np.ndarray) -> tuple[int, int, int]:
    """(x, top, bottom): a pixel column through the left central incisor and the rows strictly
    between the inner lips there."""
    left, right = target[list(topo.MOUTH_CORNERS), 0]
    x = int(0.5 * (left + right) + 0.08 * (right - left))

    def at(contour) -> float:
        pts = target[list(contour), :2]
        order = np.argsort(pts[:, 0])
        return float(np.interp(x + 0.5, pts[order, 0], pts[order, 1]))

    return x, int(np.ceil(at(topo.LIPS_INNER_UPPER))) + 1, int(np.floor(at(topo.LIPS_INNER_LOWER))) - 1


def teeth_edges(frame: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(upper, lower) incisal edge rows on a column through a central incisor, with sub-pixel
    interpolation, in a frame drawn with green teeth and a blue inside (``COLOURED``): the upper
    edge ends the first green run from the top, the lower one starts the last."""
    x, top, bottom = opening_column(target)
    column = frame[top - 3:bottom + 4, x].astype(float)
    green = column[:, 1] - np.maximum(column[:, 0], column[:, 2])  # > 0 on teeth
    teeth = np.flatnonzero(green > 0)
    runs = np.split(teeth, np.flatnonzero(np.diff(teeth) > 1) + 1)
    assert len(runs) >= 2, f"expected two rows of teeth on column {x}, got {runs}"

    def crossing(i: int, j: int) -> float:  # row where ``green`` crosses 0 between rows i, j
        return top - 3 + i + green[i] / (green[i] - green[j]) * (j - i) + 0.5

    return crossing(runs[0][-1], runs[0][-1] + 1), crossing(runs[-1][0], runs[-1][0] - 1)


# teeth and gums green, cavity and tongue blue: the rows of teeth are plain to find
COLOURED = RenderConfig(teeth_rgb=(40, 230, 40), cavity_rgb=(20, 20, 120), corner_shade=0.0)


def test_upper_teeth_stay_on_the_skull_when_the_upper_lip_lifts(astronaut_256):
    image, landmarks = astronaut_256
    renderer = WarpRenderer(image, landmarks, config=COLOURED)
    opened = open_mouth(landmarks, 0.35)
    lifted = moved(opened, set(topo.LIPS_INNER_UPPER[2:-2]) | set(topo.LIPS_OUTER_UPPER[2:-2]), -3.0)
    frames = renderer.render(np.stack([opened, lifted]))
    (up_a, low_a), (up_b, low_b) = (teeth_edges(f, t) for f, t in zip(frames, (opened, lifted), strict=True))
    assert abs(up_b - up_a) < 0.5, (up_a, up_b)  # the lip moved 3 px, the teeth did not
    assert abs(low_b - low_a) < 0.5, (low_a, low_b)


@pytest.mark.parametrize("jaw_to_teeth, lip_to_teeth", [(0.85, 0.75), (0.5, 0.25), (0.5, 0.75)])
def test_lower_teeth_follow_the_jaw_and_the_upper_teeth_do_not(astronaut_256, jaw_to_teeth,
                                                                 lip_to_teeth):
    image, landmarks = astronaut_256
    config = COLOURED.model_copy(update={"jaw_to_teeth": jaw_to_teeth, "lip_to_teeth": lip_to_teeth})
    renderer = WarpRenderer(image, landmarks, config=config)
    opened = open_mouth(landmarks, 0.3)
    dropped = moved(opened, lower_face(opened), 4.0)  # lower lip, chin and jaw down by 4 px
    frames = renderer.render(np.stack([opened, dropped]))
    (up_a, low_a), (up_b, low_b) = (teeth_edges(f, t) for f, t in zip(frames, (opened, dropped), strict=True))
    assert abs(up_b - up_a) < 0.5, (up_a, up_b)
    # the teeth take the larger of their share of the chin's travel and of the lower lip's drop
    follow = max(jaw_to_teeth, lip_to_teeth) * 4.0
    assert abs((low_b - low_a) - follow) < 0.5, (low_a, low_b, follow)


def test_a_wide_mouth_shows_teeth_a_tongue_and_a_dark_cavity(astronaut_256, renderer):
    image, landmarks = astronaut_256
    target = open_mouth(landmarks, 0.35)
    frame = renderer.render(target).astype(float)
    x, top, bottom = opening_column(target)
    column = frame[top:bottom, x]
    luma = column @ LUMA
    skin = np.median(image[int(landmarks[topo.NOSE_TIP, 1]) - 5:int(landmarks[topo.NOSE_TIP, 1]),
                           int(landmarks[topo.NOSE_TIP, 0]) - 20:int(landmarks[topo.NOSE_TIP, 0]) - 10]
                     .astype(float) @ LUMA)
    assert luma.max() > 0.75 * skin  # teeth: about as bright as the skin
    assert luma.min() < 0.25 * skin  # the back of the mouth: dark
    # the tongue: a reddish run between the dark cavity and the lower teeth
    redness = column[:, 0] - column[:, 2]
    assert redness[len(luma) // 2:].max() > 20


def test_pixels_the_motion_does_not_reach_are_the_photos_own(astronaut_256, renderer):
    image, landmarks = astronaut_256
    frames = renderer.render(np.stack([landmarks, open_mouth(landmarks, 0.25),
                                       close_eyes(landmarks, 1.0)]))
    np.testing.assert_array_equal(frames[0], image)  # nothing moves: the photo, bit for bit
    changed = (frames[1:] != image).any(-1)  # [2,H,W]
    eyes_row = int(landmarks[list(topo.RIGHT_EYE) + list(topo.LEFT_EYE), 1].min())
    nose_row = int(landmarks[topo.NOSE_TIP, 1])
    assert not changed[0, : eyes_row - 10].any()  # an opening mouth leaves the brow and hair
    assert not changed[1, nose_row + 10:].any()  # closing eyes leave the mouth and chin
    for frame_changed in changed:
        for corner in (frame_changed[:48, :48], frame_changed[:48, -48:], frame_changed[-48:, :48]):
            assert not corner.any()


def test_everything_moves_when_the_still_threshold_is_off(astronaut_256):
    image, landmarks = astronaut_256
    cfg = RenderConfig(still_below=0.0, moving_above=1e-6)
    frame = WarpRenderer(image, landmarks, config=cfg).render(open_mouth(landmarks, 0.25))
    kept = WarpRenderer(image, landmarks).render(open_mouth(landmarks, 0.25))
    assert (frame != image).any(-1).sum() > (kept != image).any(-1).sum()
