"""A tiny demo corpus end to end: manifest schema, truth shapes, playable clips, re-tracking."""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.synth.check import score_clip
from disenttalk.synth.clips import build_corpus, clip_truth, prepare_identities, write_truth
from disenttalk.synth.corpus import (
    HELD_OUT_VOICES,
    VOICE_SPLIT,
    XLING_SPLIT,
    plan_corpus,
    read_corpus_manifest,
)

SEED = 11
OPTIONS = dict(languages=("en",), clips_per_language=2, seed=SEED, xling_language="es",
               sentences_per_clip=1, xling_clips=1, voice_clips=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    summary = build_corpus(root, workers=1, progress=False, **OPTIONS)
    return root, summary, read_corpus_manifest(root)


def test_manifest_schema(corpus):
    root, summary, rows = corpus
    assert len(rows) == summary["clips"] == 4
    keys = {"clip_id", "path", "truth", "language", "speaker", "portrait", "sentence", "duration_s",
            "split", "fps", "num_frames", "engine", "voice"}
    for row in rows:
        assert set(row) == keys
        assert row["language"] in ("en", "es")
        assert row["split"] in ("train", "val", "test", XLING_SPLIT, VOICE_SPLIT)
        assert row["voice"].startswith(row["engine"] + "/")
        assert (root / row["path"]).is_file() and (root / row["truth"]).is_file()
        assert (root / row["portrait"]).is_file() and row["speaker"] in row["portrait"]
        assert row["fps"] == 25.0 and row["duration_s"] == pytest.approx(row["num_frames"] / 25.0)
        assert isinstance(row["sentence"], str) and row["sentence"]
    assert {r["split"] for r in rows} == {"train", "val", XLING_SPLIT, VOICE_SPLIT}
    assert [r["language"] for r in rows if r["split"] == XLING_SPLIT] == ["es"]
    held_out = [r["voice"] for r in rows if r["split"] == VOICE_SPLIT]
    assert held_out and set(held_out) <= set(HELD_OUT_VOICES) | {"espeak/en-us+m6"}
    assert not set(held_out) & {r["voice"] for r in rows if r["split"] != VOICE_SPLIT}
    assert summary["hours"] == pytest.approx(sum(r["duration_s"] for r in rows) / 3600)


def test_no_speaker_or_sentence_shared_with_train(corpus):
    _, _, rows = corpus
    train = [r for r in rows if r["split"] == "train"]
    others = [r for r in rows if r["split"] != "train"]
    assert not {r["speaker"] for r in train} & {r["speaker"] for r in others}
    assert not {r["sentence"] for r in train} & {r["sentence"] for r in others}


def test_truth_shapes_and_ranges(corpus):
    root, _, rows = corpus
    for row in rows:
        t = np.load(root / row["truth"])
        n, dur = row["num_frames"], row["duration_s"]
        assert t["landmarks"].shape == (n, 478, 3) and t["landmarks"].dtype == np.float32
        assert np.isfinite(t["landmarks"]).all()
        assert t["mouth_opening"].shape == (n,) and t["mouth_opening"].min() >= 0
        assert t["mouth_opening"].max() > 0.05  # the mouth really opens while speaking
        assert t["blinks"].ndim == 2 and t["blinks"].shape[1] == 2
        assert np.all((t["blinks"] >= 0) & (t["blinks"] <= dur))
        ph = t["phonemes"]
        assert len(ph) >= 5 and np.all(np.diff(ph["start"]) > 0)
        assert ph["start"][0] > 0.25 and ph["end"][-1] < dur - 0.25  # silent padding
        assert t["mouth"].shape == (n, 3) and t["eye_closure"].shape == (n,)


def test_clips_are_playable_with_audio(corpus):
    from disenttalk.media import read_video

    root, _, rows = corpus
    row = rows[0]
    video = read_video(root / row["path"])
    assert video.frames.shape == (row["num_frames"], 256, 256, 3)
    assert video.fps == pytest.approx(25.0)
    assert video.audio is not None
    assert abs(len(video.audio) / 16000 - row["duration_s"]) < 0.1
    assert np.abs(video.audio).max() > 0.05


def test_retracked_mouth_follows_the_truth(corpus):
    root, _, rows = corpus
    row = max(rows, key=lambda r: r["num_frames"])
    score = score_clip(root / row["path"], root / row["truth"])
    assert score["valid"] == 1.0 and score["frames_match"]
    assert score["mouth_r"] >= 0.9
    assert score["blinks_matched"] == score["blinks_true"] == score["blinks_found"]


def test_truth_is_reproducible_byte_for_byte(corpus, tmp_path):
    root, _, rows = corpus
    speakers, plans = plan_corpus(OPTIONS["languages"], OPTIONS["clips_per_language"], SEED,
                                  OPTIONS["xling_language"], sentences_per_clip=1, xling_clips=1,
                                  voice_clips=1)
    plan = plans[-1]  # the held-out voice's clip (a neural or festival voice where installed)
    identity = prepare_identities([s for s in speakers if s.speaker_id == plan.speaker_id])
    speech, truth = clip_truth(plan, identity[plan.speaker_id])
    write_truth(tmp_path / "again.npz", speech, truth)
    assert (tmp_path / "again.npz").read_bytes() == (root / f"clips/{plan.clip_id}.npz").read_bytes()
