"""Mouth interior and eyelids painted in the portrait's own colours, on grey, dim and real photos."""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.face import topology as topo
from disenttalk.face.editors import close_eyes, open_mouth
from disenttalk.face.measures import mouth_opening
from disenttalk.face.tracker import FaceTracker
from disenttalk.render import RenderConfig, WarpRenderer
from tests import photos

LUMA = np.array([0.299, 0.587, 0.114])


@pytest.fixture(scope="module")
def tracker():
    with FaceTracker(static=True) as t:
        yield t


def _portrait(image: np.ndarray, tracker) -> tuple[np.ndarray, np.ndarray]:
    from skimage.transform import resize

    crop = (resize(image[:300, 100:400], (256, 256), anti_aliasing=True) * 255).round().astype(np.uint8)
    lm = tracker.track_image(crop)
    assert lm is not None
    return crop, lm


def _looks(name: str, astronaut: np.ndarray) -> np.ndarray:
    """The astronaut as a grey photo, or dim and flat (low contrast)."""
    if name == "grey":
        grey = (astronaut.astype(float) @ LUMA).round().astype(np.uint8)
        return np.repeat(grey[..., None], 3, -1)
    return (60 + 0.35 * astronaut.astype(float)).round().astype(np.uint8)  # dim, low contrast


def _mouth_pixels(frame: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pixels [P,3] strictly inside the target's inner-lip opening."""
    from skimage.draw import polygon

    ring = np.r_[target[list(topo.LIPS_INNER_UPPER), :2], target[list(topo.LIPS_INNER_LOWER)[::-1], :2]]
    rr, cc = polygon(ring[:, 1] - 0.5, ring[:, 0] - 0.5, frame.shape[:2])
    return frame[rr, cc].astype(float)


@pytest.mark.parametrize("look", ["grey", "dim"])
def test_mouth_takes_the_photos_own_tones(astronaut, tracker, look):
    image, lm = _portrait(_looks(look, astronaut), tracker)
    target = open_mouth(lm, 0.25)
    frame = WarpRenderer(image, lm).render(target)
    inside = _mouth_pixels(frame, target)
    assert len(inside) > 50
    if look == "grey":  # a grey photo gets a grey mouth, not red gums and white teeth
        assert np.abs(inside - inside.mean(1, keepdims=True)).max() <= 2
    # the teeth are no brighter than the face's own highlights; the cavity is darker than its skin
    face = image[int(lm[:, 1].min()):int(lm[:, 1].max()), int(lm[:, 0].min()):int(lm[:, 0].max())]
    luma = inside @ LUMA
    assert luma.max() <= np.percentile(face.astype(float) @ LUMA, 99) + 1
    assert luma.min() < 0.5 * np.median(face.astype(float) @ LUMA)


@pytest.mark.parametrize("look", ["grey", "dim"])
def test_retracked_mouth_still_opens_on_grey_and_dim_photos(astronaut, tracker, look):
    image, lm = _portrait(_looks(look, astronaut), tracker)
    amounts = (0.0, 0.1, 0.2)  # speech-sized openings (a grey mouth opened wider loses FaceMesh)
    frames = WarpRenderer(image, lm).render(np.stack([open_mouth(lm, a) for a in amounts]))
    seen = [mouth_opening(tracker.track_image(f)) for f in frames]
    assert np.all(np.diff(seen) > 0), seen


def test_fixed_colours_still_override(astronaut, tracker):
    image, lm = _portrait(astronaut, tracker)
    target = open_mouth(lm, 0.3)
    cfg = RenderConfig(cavity_rgb=(0, 0, 255), teeth_rgb=(0, 255, 0), corner_shade=0.0)
    inside = _mouth_pixels(WarpRenderer(image, lm, config=cfg).render(target), target)
    assert np.median(inside[:, 0]) < 20  # the configured blue and green (no red) inside the mouth


@pytest.mark.parametrize("name", ["audrey", "franck"])
def test_real_photo_mouth_and_lids(name, tracker):
    from disenttalk.face.portrait import prepare_portrait

    portrait = prepare_portrait(photos.load(name))
    image, lm = portrait.crop, portrait.landmarks
    renderer = WarpRenderer(image, lm)
    opened, closed = renderer.render(np.stack([open_mouth(lm, 0.25), close_eyes(lm, 1.0)]))
    assert mouth_opening(tracker.track_image(opened)) > mouth_opening(lm) + 0.05
    # the closed lid has the tones of the skin between the eye and the brow, not a fixed colour
    eye, brow = lm[list(topo.RIGHT_EYE_UPPER), :2], lm[list(topo.RIGHT_EYEBROW), :2]
    x0, x1 = int(eye[:, 0].min()) + 4, int(eye[:, 0].max()) - 4
    lid = closed[int(eye[:, 1].mean()) + 1, x0:x1].astype(float) @ LUMA
    skin = image[int(brow[:, 1].mean()) + 2:int(eye[:, 1].min()) - 1, x0:x1].astype(float) @ LUMA
    lo, hi = np.percentile(skin, [5, 99])
    assert lo - 5 <= np.median(lid) <= hi + 5
