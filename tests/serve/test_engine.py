"""The generator deployment's engine without Ray: cached renderers draw what Generator.render draws."""

from __future__ import annotations

import numpy as np

from tests.serve.conftest import SR


def test_cached_renderer_matches_generator_render(tiny_bundle, astronaut, speech):
    from serve.config import ServeConfig
    from serve.engine import Engine
    from serve.portraits import prepare

    engine = Engine(ServeConfig())
    info = engine.load(str(tiny_bundle))
    assert info["version"] is None and info["stream_window"]["hop"] == 8
    model = engine.current()
    portrait = prepare("0" * 64, astronaut)
    motion = model.offline.motion(speech[: SR // 2], SR, steps=2)
    expected = model.offline.render(motion, portrait.crop, portrait.crop_landmarks)
    for _ in range(2):  # the second call reuses the renderer
        np.testing.assert_array_equal(engine.frames(model, model.offline, motion, portrait, True), expected)
    pasted = engine.frames(model, model.offline, motion, portrait, False)
    assert pasted.shape == (len(motion), 512, 512, 3)
    # a video is made a chunk at a time (Engine.video): the same frames
    chunks = list(engine.frame_chunks(model, model.offline, [motion], portrait, False, size=4))
    assert {len(c) for c in chunks[:-1]} == {4}
    np.testing.assert_array_equal(np.concatenate(chunks), pasted)
    tr, t = portrait.transform, len(expected)  # the whole-photo paste, as workflows.generate does it
    full = type(tr)(centres=np.repeat(tr.centres, t, 0), sides=np.repeat(tr.sides, t, 0), size=tr.size,
                    frame_shape=tr.frame_shape)
    reference = full.paste(np.repeat(astronaut[None], t, 0), expected, still=portrait.crop)
    assert np.abs(pasted.astype(int) - reference).max() <= 1


def test_a_video_draws_each_window_of_motion_as_it_comes_the_same_frames(tiny_bundle, astronaut, speech):
    """Engine.generate renders window k's frames while window k+1 samples: frames drawn from the
    motion a window at a time, in batches that straddle the windows, one batch at a time or
    several at once, are the frames of the whole."""
    from types import SimpleNamespace

    from serve.config import ServeConfig
    from serve.engine import Engine, controls
    from serve.portraits import prepare

    engine = Engine(ServeConfig())
    engine.load(str(tiny_bundle))
    model, gen = engine.current(), engine.current().offline
    portrait = prepare("1" * 64, astronaut)
    audio = np.tile(speech, 6)  # 9 s: more than one offline window
    options = SimpleNamespace(steps=2, guidance=None, seed=4, lip_scale=1.0, eye_scale=1.0, global_scale=1.0,
                              blinks=True, blink_rate=None, crop_only=True, output="mp4")
    kwargs = dict(steps=2, seed=4, controls=controls(options))
    windows = list(gen.motion_chunks(audio, SR, **kwargs))
    motion = gen.motion(audio, SR, **kwargs)
    assert len(windows) >= 2 and sum(len(w) for w in windows) == len(motion)
    assert any(len(w) % 16 for w in windows[:-1])  # a batch of 16 frames straddles two windows
    whole = engine.frames(model, gen, motion, portrait, True)
    for workers in (1, 3):  # batches drawn one at a time or three at once
        np.testing.assert_array_equal(np.concatenate(list(engine.frame_chunks(
            model, gen, windows, portrait, True, size=16, workers=workers))), whole)
    video = engine.generate(audio, portrait, options)
    assert video["meta"]["frames"] == len(motion) and video["meta"]["motion_s"] > 0
    body, _ = engine.video(iter([whole]), motion.fps, audio)
    assert video["body"] == body  # the same mp4 as the frames of the whole motion written at once


def test_a_large_photo_is_drawn_on_its_own_pixels_as_generate_draws_it(tiny_bundle, astronaut, speech):
    from skimage.transform import rescale

    from disenttalk.face.portrait import sharp_crop
    from serve.config import ServeConfig
    from serve.engine import Engine
    from serve.portraits import prepare

    engine = Engine(ServeConfig())
    engine.load(str(tiny_bundle))
    model = engine.current()
    photo = (rescale(astronaut, 3, channel_axis=2, order=1) * 255).clip(0, 255).astype(np.uint8)
    portrait = prepare("2" * 64, photo)  # a ~515 px face box: drawn on its own pixels
    motion = model.offline.motion(speech[: SR // 2], SR, steps=2)
    sharp = sharp_crop(photo, portrait.transform, portrait.crop.shape[0])
    side = int(portrait.transform.sides[0])
    assert sharp.shape == (side, side, 3) and side > 512
    drawn = model.offline.render(motion, portrait.crop, portrait.crop_landmarks, sharp=sharp)
    assert drawn.shape == (len(motion), side, side, 3)
    pasted = engine.frames(model, model.offline, motion, portrait, False)
    assert pasted.shape == (len(motion), *photo.shape)
    tr, t = portrait.transform, len(drawn)
    full = type(tr)(centres=np.repeat(tr.centres, t, 0), sides=np.repeat(tr.sides, t, 0), size=tr.size,
                    frame_shape=tr.frame_shape)
    reference = full.paste(np.repeat(photo[None], t, 0), drawn, still=sharp)
    assert np.abs(pasted.astype(int) - reference).max() <= 1
    # only what moved is pasted: the rows above the eyes are the photo's own
    eyes = int(portrait.transform.invert(portrait.crop_landmarks[None])[0][:, 1].min())
    np.testing.assert_array_equal(pasted[:, :eyes - 10], np.repeat(photo[None, :eyes - 10], t, 0))
    # the crop the model sees is unchanged: crop_only still answers 256 px frames
    assert engine.frames(model, model.offline, motion, portrait, True).shape[1:] == (256, 256, 3)


def test_portraits_are_cut_as_the_models_training_clips_were(tiny_bundle, astronaut, speech, tmp_path):
    import shutil

    from disenttalk.bundle import update_meta
    from serve.config import ServeConfig
    from serve.engine import Engine
    from serve.portraits import prepare

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    update_meta(bundle, framing={"crop_size": 128, "crop_margin": 0.4})
    engine = Engine(ServeConfig())
    engine.load(str(bundle))
    model = engine.current()
    portrait = prepare("1" * 64, astronaut)  # what the Portraits deployment cuts, model unknown
    assert portrait.crop.shape == (256, 256, 3)
    framed = engine.framed(model, portrait)
    assert framed.crop.shape == (128, 128, 3) and framed.framing == (128, 0.4)
    assert engine.framed(model, portrait) is framed  # cut once
    motion = model.offline.motion(speech[: SR // 2], SR, steps=2)
    crops = engine.frames(model, model.offline, motion, portrait, True)
    np.testing.assert_array_equal(crops, model.offline.render(motion, framed.crop, framed.crop_landmarks))
    assert engine.frames(model, model.offline, motion, portrait, False).shape[1:] == (512, 512, 3)


def test_tight_crops_are_animated_and_only_the_photo_is_drawn(tiny_bundle, speech):
    """An aligned 112 px face and a photo with the forehead cut off: their crops reach past the
    photo (padded there), frames come back the photo's size, pixels outside the crop square stay."""
    from serve.config import ServeConfig
    from serve.engine import Engine
    from serve.portraits import prepare
    from tests import tight

    engine = Engine(ServeConfig())
    engine.load(str(tiny_bundle))
    model = engine.current()
    motion = model.offline.motion(speech[: SR // 2], SR, steps=2)
    for i, photo in enumerate((tight.aligned_112("cage"), tight.forehead_cut("audrey"))):
        portrait = prepare(f"{i + 3}" * 64, photo)
        assert portrait.transform.outside()[0] > 0.2  # the crop square reaches past the photo
        crops = engine.frames(model, model.offline, motion, portrait, True)
        assert crops.shape == (len(motion), 256, 256, 3)
        pasted = engine.frames(model, model.offline, motion, portrait, False)
        assert pasted.shape == (len(motion), *photo.shape)
        assert np.abs(pasted.astype(float) - photo).mean() < 10  # the photo, its face moved a little
        (cx, cy), half = portrait.transform.centres[0], portrait.transform.sides[0] / 2
        beside = np.ones(photo.shape[:2], bool)
        beside[max(0, int(cy - half) - 1):int(cy + half) + 2, max(0, int(cx - half) - 1):int(cx + half) + 2] = False
        assert (pasted[:, beside] == photo[beside]).all()
        assert beside.any() == (i == 1)  # the 112 px photo lies all inside its crop square
