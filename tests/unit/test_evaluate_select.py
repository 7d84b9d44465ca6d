"""Which clips the evaluate stage scores: a capped split still covers every language."""

from __future__ import annotations

import pytest

from workflows.evaluation import EvaluateConfig, select_clips


def test_cap_is_shared_across_languages():
    index = [{"clip_id": f"{lang}_{i}", "split": "test", "language": lang}
             for lang in ("en", "zh") for i in range(5)]
    index += [{"clip_id": "es_0", "split": "test_xling", "language": "es"}]
    cfg = EvaluateConfig.from_dict({"max_clips_per_split": 4, "splits": ["test", "test_xling"],
                                    "per_language": ["test"]})
    groups = select_clips(index, cfg)
    assert [r["clip_id"] for r in groups["test"]] == ["en_0", "en_1", "zh_0", "zh_1"]
    assert [r["clip_id"] for r in groups["test/zh"]] == ["zh_0", "zh_1"]
    assert [r["clip_id"] for r in groups["test_xling"]] == ["es_0"]


def test_each_clip_samples_with_its_own_seed():
    from workflows.evaluation import clip_seed

    seeds = {clip_seed(0, f"en_test_{i:03d}") for i in range(50)}
    assert len(seeds) == 50  # clips scored together share neither noise nor blink timing
    assert clip_seed(0, "en_test_001") == clip_seed(0, "en_test_001")  # reproducible
    assert clip_seed(1, "en_test_001") == clip_seed(0, "en_test_001") + 1


def test_voice_groups_follow_the_corpus_manifest():
    from workflows.evaluation import voice_groups

    groups = {"test": [{"clip_id": "en_0"}, {"clip_id": "en_1"}, {"clip_id": "zh_0"}],
              "test_voice": [{"clip_id": "v_0"}, {"clip_id": "v_1"}]}
    info = {"en_0": {"voice": "espeak/en-us"}, "en_1": {"voice": "festival/kal_diphone"},
            "v_0": {"voice": "flite/rms"}, "v_1": {"voice": "flite/rms"}}  # zh_0: no voice named
    out = voice_groups(groups, info, ("test", "test_voice"))
    assert {k: [r["clip_id"] for r in v] for k, v in out.items()} == {
        "test/espeak/en-us": ["en_0"], "test/festival/kal_diphone": ["en_1"],
        "test_voice/flite/rms": ["v_0", "v_1"]}
    assert voice_groups(groups, info, ()) == {}


def test_pause_frames_and_mouth_figures(astronaut_256):
    import numpy as np

    from disenttalk.constants import SAMPLE_RATE
    from disenttalk.metrics.clip import Trace, pause_frames, score_clip

    sr, fps = SAMPLE_RATE, 25.0
    audio = np.zeros(sr * 4, np.float32)
    audio[sr:2 * sr] = 0.1 * np.sin(np.arange(sr) * 0.3)  # sound in the second second only
    pauses = pause_frames(audio, sr, 100, fps)
    # quiet and at least 0.25 s (7 frames) from the sound: frames 0..17 and 57..99
    assert pauses[:18].all() and not pauses[18:57].any() and pauses[57:].all()
    assert pause_frames(np.zeros(sr), sr, 25, fps).all()

    from disenttalk.face import measures

    face = astronaut_256[1]
    lm = np.repeat(face[None], 100, 0).astype(np.float32)
    score = score_clip(Trace(lm), Trace(lm), fps=fps, pauses=pauses)
    rest = float(measures.mouth_opening(face[None])[0])
    assert score["mouth_p50"] == pytest.approx(rest) and score["mouth_p95"] == pytest.approx(rest)
    assert score["mouth_pause"] == pytest.approx(rest)
    assert np.isnan(score_clip(Trace(lm), Trace(lm), fps=fps)["mouth_pause"])


def test_splits_the_store_does_not_hold_are_not_reported():
    index = [{"clip_id": "en_0", "split": "test", "language": "en"}]
    groups = select_clips(index, EvaluateConfig())  # default splits include val, test_xling, test_voice
    assert set(groups) == {"test", "test/en"}
