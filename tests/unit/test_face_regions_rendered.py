"""Region selection (Eq. 1–2) on landmarks re-tracked from rendered video, not just synthetic arrays.

The astronaut is rendered by the warp renderer under edited landmarks (a talking mouth or
blinking eyes), MediaPipe re-tracks the frames, and the morphable model + region split are
fit on what the tracker saw, tracker noise included. Scores are |Δ| in shape units
(``normalise="none"``): with a geometric editor, Eq. 1's division by σ favours noise dims here.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.transform import resize

from disenttalk.face.editors import close_eyes, open_mouth
from disenttalk.face.measures import eye_aspect_ratio, mouth_opening
from disenttalk.face.morphable import MorphableModel
from disenttalk.face.regions import select_regions
from disenttalk.face.tracker import FaceTracker
from disenttalk.render import WarpRenderer

T = 16  # frames per clip


@pytest.fixture(scope="module")
def retracked(astronaut):
    """Re-tracked landmark clips {"mouth": [...], "eyes": [...]} and the target clips."""
    portrait = (resize(astronaut, (256, 256), anti_aliasing=True) * 255).astype(np.uint8)
    with FaceTracker() as tracker:
        face = tracker.track_image(portrait).astype(np.float64)
        renderer = WarpRenderer(portrait, face)
        clips, targets = {"mouth": [], "eyes": []}, {"mouth": [], "eyes": []}
        for phase in (0.0, 2.0):
            talk = open_mouth(np.repeat(face[None], T, 0),
                              0.12 * (1 + np.sin(np.arange(T) / 1.5 + phase)))
            blink = np.zeros(T)
            start = 3 + int(3 * phase)
            blink[start:start + 4] = [0.6, 1.0, 1.0, 0.6]
            winks = np.stack([close_eyes(face, a) for a in blink])
            for name, target in (("mouth", talk), ("eyes", winks)):
                tracks = tracker.track(renderer.render(target))
                assert tracks.valid.all()
                clips[name].append(tracks.landmarks.astype(np.float64))
                targets[name].append(target)
    return clips, targets


def test_tracker_sees_the_rendered_motion(retracked):
    clips, targets = retracked
    for seen, asked in zip(clips["mouth"], targets["mouth"], strict=True):
        assert np.corrcoef(mouth_opening(seen), mouth_opening(asked))[0, 1] > 0.9
    for seen, asked in zip(clips["eyes"], targets["eyes"], strict=True):
        assert np.corrcoef(eye_aspect_ratio(seen).mean(-1), eye_aspect_ratio(asked).mean(-1))[0, 1] > 0.8


@pytest.mark.parametrize(("scenario", "region"), [("mouth", "lip"), ("eyes", "eye")])
def test_dominant_motion_lands_in_its_region(retracked, scenario, region):
    clips, _ = retracked
    model = MorphableModel.fit(clips[scenario], n_expression=8)
    split = select_regions(model, clips[scenario], k_lip=2, k_eye=2, normalise="none")
    codes = np.concatenate([model.encode(c)[0] for c in clips[scenario]])
    dominant = int(codes.std(0).argmax())
    assert dominant in split.indices(region)


def test_mixed_corpus_separates_lips_from_eyes(retracked):
    clips, _ = retracked
    corpus = clips["mouth"] + clips["eyes"]
    model = MorphableModel.fit(corpus, n_expression=8)
    split = select_regions(model, corpus, k_lip=2, k_eye=4, normalise="none")
    # The dimension carrying most of the talking clips' motion is a lip dimension; that of the
    # blinking clips an eye dimension.
    talk = np.concatenate([model.encode(c)[0] for c in clips["mouth"]]).std(0)
    blink = np.concatenate([model.encode(c)[0] for c in clips["eyes"]]).std(0)
    assert int(talk.argmax()) in split.lip
    assert int(blink.argmax()) in split.eye
