"""Tight face crops animate: an aligned 112 px face, a forehead cut off, a face filling the frame.

The crop square then reaches past the photo; that part is padded from the photo's border (its
pixels carried outward and smoothed with the distance) and is never pasted back. A photo is
refused only when what moves (eyes, mouth, the jaw under it) is outside, and the message says
which. The photos are real ones (``tests/photos.py``) cut as in ``tests/tight.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from disenttalk.face import topology as topo
from disenttalk.face.crop import CropTransform
from disenttalk.face.detect import FaceFinder
from disenttalk.face.portrait import NoUsableFace, prepare_portrait
from tests import tight
from tests.unit.test_generate import SPLIT, SR, FrameFrontend, N, SmoothDenoiser, speech_like

TIGHT = {  # (photo, cut): what people upload as an avatar
    "aligned_112_cage": ("cage", tight.aligned_112),
    "aligned_112_audrey": ("audrey", tight.aligned_112),
    "forehead_cut_audrey": ("audrey", tight.forehead_cut),
    "forehead_cut_cage": ("cage", tight.forehead_cut),
}


def outside_photo(portrait) -> np.ndarray:
    """[S,S] bool: the crop's pixels whose place in the photo lies outside it."""
    tr = portrait.transform
    size = portrait.crop.shape[0]
    centres = (np.arange(size) + 0.5) / size * tr.sides[0] + tr.centres[0][:, None] - tr.sides[0] / 2
    xs, ys = centres[0], centres[1]
    h, w = tr.frame_shape
    return ((ys[:, None] < 0) | (ys[:, None] > h)) | ((xs[None] < 0) | (xs[None] > w))


@pytest.mark.parametrize("case", list(TIGHT))
def test_a_tight_crop_is_prepared_with_its_face_whole_and_a_padded_ring(case):
    name, cut = TIGHT[case]
    image = cut(name)
    portrait = prepare_portrait(image)
    face = portrait.faces[portrait.index]
    assert face.usable and portrait.crop.shape == (256, 256, 3)
    # the crop square reaches past the photo (its margin around the face: 26–43 % of it outside)
    assert portrait.transform.outside()[0] > 0.2
    if "forehead" in case:
        assert face.box[1] < 0 and face.landmarks[topo.FOREHEAD, 1] < 0
    else:
        assert image.shape == (112, 112, 3)
    # the crop's landmarks are the face FaceMesh finds in the crop, where the photo's put it
    expected = portrait.transform.apply(face.landmarks[None])[0]
    assert np.abs(portrait.landmarks[:, :2] - expected[:, :2]).mean() < 3.0
    # inside the photo the crop is the photo; outside, a soft continuation of its border
    ring = outside_photo(portrait)
    assert ring.any() and not ring[tuple(np.round(portrait.landmarks[list(topo.LIPS), 1::-1].T).astype(int))].any()
    plain = portrait.transform.crop(image[None], smooth_outside=False)[0].astype(float)
    crop = portrait.crop.astype(float)
    np.testing.assert_array_equal(crop[~ring], plain[~ring])
    # streaks of repeated border pixels are smoothed out: along the rows above the photo, less
    # fine detail (second differences) than the border repeated (a quarter of it, measured)
    rows = np.nonzero(ring.all(1))[0]
    assert len(rows) > 20

    def detail(x):
        return np.abs(np.diff(x[rows], n=2, axis=1)).mean()

    assert detail(crop) < 0.5 * detail(plain)


def test_an_aligned_112_crop_is_found_by_the_detectors_and_its_chin_may_be_outside():
    image = tight.aligned_112("cage")
    with FaceFinder() as finder:
        found = finder.boxes(image)
    assert len(found) == 1
    portrait = prepare_portrait(image)
    face = portrait.faces[0]
    # eyes and mouth where the ArcFace template puts them, the chin's tip below the photo
    assert np.allclose(face.landmarks[[468, 473], :2], tight.ARCFACE_112[:2], atol=4)
    assert np.allclose(face.landmarks[[61, 291], :2], tight.ARCFACE_112[3:], atol=4)
    assert face.landmarks[topo.CHIN, 1] > 112


def test_a_face_the_detectors_miss_in_a_very_tight_crop_is_found_in_a_padded_copy():
    image = tight.eyebrows_to_lips("cage")  # brows to under the lips, cheek to cheek × 0.85
    with FaceFinder() as finder:
        assert finder._detections(image) == []  # neither detector finds it as it is
        found = finder.boxes(image)  # the photo inside a border, boxes mapped back
    assert len(found) == 1
    box = found[0][0]
    assert box[0] < 0 and box[1] < 0 and box[0] + box[2] > image.shape[1]  # the face box hangs out
    portrait = prepare_portrait(image)
    assert portrait.faces[0].usable and portrait.transform.outside()[0] > 0.5


@pytest.mark.parametrize("name", ["cage", "audrey", "franck"])
def test_a_photo_cut_under_the_nose_is_refused_because_its_mouth_is_outside(name):
    with pytest.raises(NoUsableFace, match="its mouth is outside the photo") as err:
        prepare_portrait(tight.below_nose(name))
    assert err.value.reason == "cut_off" and err.value.faces[0].outside == ("mouth",)


# -- animation: a Generator renders the tight crops and they go back into the photo ----------


def generator_for(landmarks: np.ndarray):
    """A tiny Generator (stand-in frontend and denoiser, as in test_generate) whose morphable
    model is fit to the portrait's own landmarks with the jaw dropping, so motion opens the mouth."""
    from disenttalk.bundle import Bundle
    from disenttalk.face.editors import open_mouth
    from disenttalk.face.morphable import MorphableModel
    from disenttalk.generate import Generator
    from disenttalk.model.config import DenoiserConfig, ModelConfig
    from disenttalk.model.diffusion import GaussianDiffusion

    rng = np.random.default_rng(0)
    opening = np.linspace(0, 0.25, 20)
    clips = [open_mouth(landmarks[None].repeat(20, 0), rng.permutation(opening))
             + rng.normal(0, 0.3, (20, *landmarks.shape)).astype(np.float32) for _ in range(3)]
    cfg = ModelConfig(denoiser=DenoiserConfig(dim=16, num_blocks=2, heads=2), n_expression=N, k_lip=3, k_eye=2)
    norm = {"mean": np.zeros(N, np.float32), "std": np.ones(N, np.float32)}
    bundle = Bundle(path=None, config=cfg, split=SPLIT, norm=norm, expert_state={}, denoiser_state={},
                    meta={"guidance": 1.5}, morphable=MorphableModel.fit(clips, n_expression=N))
    return Generator(bundle, frontend=FrameFrontend(), denoiser=SmoothDenoiser(GaussianDiffusion(cfg.diffusion)),
                     window=30, prefix=8)


@pytest.mark.parametrize("case", ["aligned_112_cage", "forehead_cut_audrey"])
def test_a_tight_crop_animates_and_only_the_photo_is_written(case):
    from disenttalk.face.editors import open_mouth
    from disenttalk.generate import Motion

    name, cut = TIGHT[case]
    image = cut(name)
    portrait = prepare_portrait(image)
    gen = generator_for(portrait.landmarks)
    # the mouth opens: the portrait's own expression, then with the jaw dropped
    expression, _, _ = gen.bundle.morphable.encode(
        np.stack([portrait.landmarks, open_mouth(portrait.landmarks, 0.25)]))
    motion = Motion(expression.astype(np.float32), np.zeros((2, 6), np.float32))
    frames = gen.render(motion, portrait.crop, portrait.landmarks, rest="portrait")
    assert frames.shape == (2, 256, 256, 3)
    mouth = np.round(portrait.landmarks[list(topo.LIPS), :2]).astype(int)
    (x0, y0), (x1, y1) = mouth.min(0) - 4, mouth.max(0) + 12
    change = np.abs(frames.astype(float) - portrait.crop)
    assert change[0].mean() < 2.0  # the portrait's own expression renders the portrait
    assert change[1, y0:y1, x0:x1].mean() > 8.0, change[1, y0:y1, x0:x1].mean()  # the mouth opened
    above = outside_photo(portrait) & (np.arange(256) < portrait.landmarks[list(topo.EYES), 1].min())[:, None]
    assert above.any() and change[1][above].mean() < 0.5  # the padded ring above the eyes stays still
    # back into the photo: the photo's shape, the open mouth in it, nothing else written
    pasted = portrait.paste(image, frames)
    assert pasted.shape == (2, *image.shape)
    assert np.abs(pasted[0].astype(float) - image).mean() < 2.0
    in_photo = portrait.transform.invert(portrait.landmarks[None])[0]
    (px0, py0), (px1, py1) = np.round(in_photo[list(topo.LIPS), :2].min(0)).astype(int), \
        np.round(in_photo[list(topo.LIPS), :2].max(0)).astype(int)
    assert np.abs(pasted[1, py0:py1, px0:px1].astype(float) - image[py0:py1, px0:px1]).mean() > 5.0
    # and speech drives it: audio → motion → frames that move, drawn on the photo's own pixels
    speech = gen.motion(speech_like(1.0), SR, steps=2, seed=0)
    talk = portrait.paste(image, gen.render(speech, portrait.crop, portrait.landmarks,
                                            sharp=portrait.sharp_crop(image)))
    assert talk.shape == (25, *image.shape)
    assert np.abs(np.diff(talk.astype(float), axis=0)).mean(axis=(1, 2, 3)).max() > 0.05


def test_paste_writes_only_the_photos_own_area():
    image = np.full((60, 80, 3), 100, np.uint8)
    box = CropTransform(centres=np.array([[40.0, 0.0]]), sides=np.array([60.0]), size=64,
                        frame_shape=(60, 80))  # x 10..70, y −30..30: its top half is above the photo
    assert box.outside()[0] == pytest.approx(0.5)
    crop = box.crop(image[None])
    assert (crop == 100).all()  # a flat photo pads flat
    pasted = box.paste(image[None], np.zeros_like(crop), feather=0.0)
    assert pasted.shape == (1, 60, 80, 3)
    assert (pasted[0, :29, 11:69] == 0).all() and (pasted[0, 31:] == 100).all()
    assert (pasted[0, :, :9] == 100).all() and (pasted[0, :, 71:] == 100).all()
    assert dataclasses.replace(box, size=128).crop(image[None]).shape == (1, 128, 128, 3)


def test_disenttalk_generate_animates_a_tight_crop_and_names_a_mouth_outside(tmp_path, monkeypatch):
    """``disenttalk generate``'s own path (workflows.generate.run: read the photo, prepare, move,
    draw, paste, write the mp4) on an aligned 112 px face; under-the-nose photos are refused."""
    from PIL import Image

    import disenttalk.generate
    import workflows.register
    from disenttalk import media
    from workflows.generate import GenerateError, portrait_of, run

    photo = tight.aligned_112("cage")
    Image.fromarray(photo).save(tmp_path / "avatar.png")
    media.write_audio(tmp_path / "speech.wav", speech_like(1.0), SR)
    gen = generator_for(prepare_portrait(photo).landmarks)
    monkeypatch.setattr(workflows.register, "resolve_bundle", lambda uri: uri)
    monkeypatch.setattr(disenttalk.generate.Generator, "from_bundle", classmethod(lambda cls, path, **kw: gen))
    out = tmp_path / "talk.mp4"
    summary = run("tiny", str(tmp_path / "speech.wav"), str(tmp_path / "avatar.png"), str(out), steps=2)
    assert summary["size"] == [112, 112] and summary["frames"] == 25
    video = media.read_video(out)
    assert video.frames.shape == (25, 112, 112, 3)
    assert np.abs(np.diff(video.frames.astype(float), axis=0)).max() > 10  # it moves
    with pytest.raises(GenerateError, match="its mouth is outside the photo"):
        portrait_of(tight.below_nose("cage"))
