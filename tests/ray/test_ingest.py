"""Bring your own videos: a folder of ordinary videos → manifest → preprocess → 25 fps clips.

The folder holds what real talking-head data looks like: 30 and 25 fps, 44.1 kHz stereo sound, a
phone video stored sideways with a rotation flag, two people in one shot, and a one-minute video
with a shot cut half-way, plus a video with no face that must be rejected.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from tests import photos
from tests.clips import face_crop, mark_rotated, sway, two_faces, write_stereo
from tests.ray.conftest import tone
from workflows import manifest
from workflows.platform import clipstore
from workflows.preprocess import read_manifest, run
from workflows.preprocess.worker import ClipProcessor, PreprocessConfig

pytestmark = pytest.mark.ray

SIZE = 160
LONG_S = 60.0


def _config() -> PreprocessConfig:
    return PreprocessConfig.from_dict({
        "ray": {"num_cpus": 2, "progress_bars": False},
        "actors": {"min_size": 2, "max_size": 2, "num_cpus": 1.0},
        "mlflow": {"enabled": False},
    })  # fmt: skip


@pytest.fixture(scope="module")
def faces(astronaut):
    return face_crop(astronaut, SIZE), face_crop(photos.load("grace_hopper"), SIZE)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, faces):
    from disenttalk.media import write_video

    a, b = faces
    root = tmp_path_factory.mktemp("videos")
    for speaker in ("alice", "bob", "carol", "dave", "erin"):
        (root / speaker).mkdir()
    write_video(root / "alice/talk30.mp4", sway(a, 72, SIZE), 30.0, tone(2.4))
    write_video(root / "alice/talk25.mp4", sway(a, 60, SIZE), 25.0, tone(2.4))
    t = np.arange(int(2.4 * 44_100)) / 44_100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)])
    write_stereo(root / "bob/stereo.mp4", sway(b, 60, SIZE), 25.0, stereo, 44_100)
    sideways = np.ascontiguousarray(np.rot90(sway(b, 60, SIZE)[:, :, 20:140], 1, axes=(1, 2)))
    write_video(root / "bob/rotated.mp4", sideways, 25.0, tone(2.4))  # stored 160 wide, 120 high
    mark_rotated(root / "bob/rotated.mp4")
    write_video(root / "carol/two_faces.mp4", two_faces(a, b, 60, SIZE), 25.0, tone(2.4))
    half = int(LONG_S / 2 * 25)
    long = np.concatenate([sway(a, half, SIZE), sway(b, half, SIZE)])  # a cut at 30 s
    write_video(root / "dave/long.mp4", long, 25.0, tone(LONG_S))
    write_video(root / "erin/noface.mp4", np.full((60, SIZE, SIZE, 3), 90, np.uint8), 25.0, tone(2.4))
    return root


@pytest.fixture(scope="module")
def ingested(ray_cluster, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest")
    manifest.cli(str(folder), out=str(out / "manifest.jsonl"), language="en", val=0.0, test=0.0)
    summary = run(str(out / "manifest.jsonl"), str(out / "store"), _config())
    return out, summary


def test_a_folder_of_videos_becomes_25_fps_clips_with_16_khz_audio(ingested):
    out, summary = ingested
    rows, bad = read_manifest(str(out / "manifest.jsonl"))
    assert not bad and len(rows) == 7
    index = clipstore.read_index(str(out / "store"))
    assert summary["ok"] == 6 and summary["rejected"] == 1 and summary["segments"] == len(index)
    rejects = {r["clip_id"]: r["reason"] for r in clipstore.read_rejects(str(out / "store"))}
    assert rejects == {"erin__noface": "no_face"}
    for row in index:
        rec = clipstore.read_record(str(out / "store"), row)
        assert rec.fps == 25.0 and rec.sample_rate == 16_000
        assert len(rec.audio) == pytest.approx(rec.num_frames / 25.0 * 16_000, abs=1)
        assert rec.valid.mean() > 0.9 and rec.features.shape[0] == rec.num_frames
    by_id = {r["clip_id"]: r for r in index}
    assert by_id["alice__talk30"]["num_frames"] == 60  # 2.4 s of 30 fps, shown at 25 fps
    stereo = clipstore.read_record(str(out / "store"), by_id["bob__stereo"])
    assert 0.1 < np.sqrt(np.mean(stereo.audio**2)) < 0.3  # both channels mixed down, not lost


def test_a_sideways_phone_video_is_tracked_upright(ingested):
    out, _ = ingested
    row = next(r for r in clipstore.read_index(str(out / "store")) if r["clip_id"] == "bob__rotated")
    rec = clipstore.read_record(str(out / "store"), row)
    assert tuple(rec.extra["frame_shape"]) == (160, 120)  # portrait, as players show it
    eyes, chin = rec.landmarks[:, 159, 1], rec.landmarks[:, 152, 1]  # upper eyelid, chin
    assert (eyes < chin).all()


def test_two_people_in_one_shot_keep_one_face(ingested):
    out, _ = ingested
    row = next(r for r in clipstore.read_index(str(out / "store")) if r["clip_id"] == "carol__two_faces")
    rec = clipstore.read_record(str(out / "store"), row)
    centres = rec.extra["crop_centres"][:, 0]
    assert (centres < SIZE).all()  # the left person throughout, though the right one ends larger


def test_a_long_video_is_cut_into_segments_at_its_shot_cut(ingested):
    out, _ = ingested
    parts = sorted((r for r in clipstore.read_index(str(out / "store"))
                    if r["source_clip_id"] == "dave__long"), key=lambda r: r["start_s"])
    assert [r["clip_id"] for r in parts] == [f"dave__long-{k:03d}" for k in range(6)]
    assert all(r["duration_s"] <= 10.0 + 1e-6 for r in parts)
    cut = LONG_S / 2
    assert all(r["start_s"] + r["duration_s"] <= cut + 1e-6 or r["start_s"] >= cut for r in parts)
    assert sum(r["duration_s"] for r in parts) > LONG_S - 1.0  # little lost around the cut
    records = {r["record"] for r in parts}
    assert len(records) == 6 and all(name.startswith("clips/") for name in records)


def test_memory_does_not_grow_with_the_videos_length(folder, tmp_path):
    """Peak traced memory of preprocessing the one-minute video vs its first 20 s."""
    from disenttalk.media import FrameStream, write_video

    short = tmp_path / "short.mp4"
    write_video(short, FrameStream(folder / "dave/long.mp4").read(0, 500), 25.0, tone(20.0))
    proc = ClipProcessor(_config(), str(tmp_path / "store"), frozenset())
    peaks = {}
    for name, path in (("short", short), ("long", folder / "dave/long.mp4")):
        tracemalloc.start()
        results = proc.process({"clip_id": name, "uri": str(path), "split": "train"})
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert all(r["status"] == "ok" for r in results)
    whole = LONG_S * 25 * SIZE * SIZE * 3  # bytes of the long video's frames decoded at once
    assert peaks["long"] < 1.25 * peaks["short"] and peaks["long"] < whole / 3, peaks
