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
    tr, t = portrait.transform, len(expected)  # the whole-photo paste, as workflows.generate does it
    full = type(tr)(centres=np.repeat(tr.centres, t, 0), sides=np.repeat(tr.sides, t, 0), size=tr.size,
                    frame_shape=tr.frame_shape)
    reference = full.paste(np.repeat(astronaut[None], t, 0), expected)
    assert np.abs(pasted.astype(int) - reference).max() <= 1
