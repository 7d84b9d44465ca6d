"""``disenttalk manifest``: a folder of videos → manifest rows, speakers kept within one split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from disenttalk import media
from workflows import manifest
from workflows.common import UserError
from workflows.preprocess import read_manifest


def _video(path, seconds=1.2, fps=25.0, audio=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.full((int(seconds * fps), 32, 32, 3), 90, np.uint8)
    sound = (0.2 * np.sin(np.arange(int(seconds * 16000)) / 5)).astype(np.float32) if audio else None
    media.write_video(path, frames, fps, audio=sound, sample_rate=16000)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "videos"
    for speaker in ("alice", "bob", "carol", "dave", "erin", "frank"):
        _video(root / "en" / speaker / "talk 1.mp4")
        _video(root / "en" / speaker / "talk2.mov", fps=30.0)
    _video(root / "zh_wei_01.mp4", seconds=2.0)  # speaker from the file name
    (root / "zh_wei_01.json").write_text(json.dumps({"language": "zh", "sentence": "你好"}))
    _video(root / "mute.mp4", audio=False)
    (root / "broken.mp4").write_bytes(b"not a video")
    (root / "notes.txt").write_text("hello")
    return root


def test_folder_of_videos_becomes_a_manifest(folder, tmp_path):
    rows, skipped = manifest.build(str(folder), val=0.2, test=0.2)
    assert len(rows) == 13
    by_id = {r["clip_id"]: r for r in rows}
    alice = by_id["en__alice__talk_1"]
    assert (alice["speaker"], alice["language"]) == ("alice", "en")
    assert alice["duration_s"] == pytest.approx(1.2, abs=0.1) and alice["path"].endswith("talk 1.mp4")
    wei = by_id["zh_wei_01"]
    assert (wei["speaker"], wei["language"], wei["sentence"]) == ("zh_wei", "zh", "你好")  # sidecar
    # every speaker in exactly one split; 7 speakers → test and val each hold some
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r["speaker"], r["split"]) == r["split"]
    assert {"train", "val", "test"} <= set(split_of.values())
    reasons = {p.rsplit("/", 1)[-1]: why for p, why in ((s["path"], s["reason"]) for s in skipped)}
    assert reasons == {"mute.mp4": "no audio stream", "notes.txt": "not a video file",
                       "broken.mp4": reasons["broken.mp4"]}
    assert reasons["broken.mp4"].startswith("not a readable video")
    # the same folder gives the same splits; the CLI writes what preprocess reads
    assert manifest.build(str(folder), val=0.2, test=0.2)[0] == rows
    out = tmp_path / "manifest.jsonl"
    manifest.cli(str(folder), out=str(out), language="es", val=0.2, test=0.2)
    parsed, bad = read_manifest(str(out))
    assert not bad and len(parsed) == 13 and {r["language"] for r in parsed} == {"es"}


def test_manifest_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        manifest.build(str(tmp_path / "missing"))
    _video(tmp_path / "one" / "a.mp4")
    _video(tmp_path / "one" / "b.mp4")
    with pytest.raises(UserError, match="cannot fill test"):  # two speakers: none left to train on
        manifest.build(str(tmp_path / "one"), val=0.5, test=0.5)
