"""MP4 written a chunk at a time: the same video as written at once, and memory of one chunk."""

from __future__ import annotations

import weakref

import numpy as np
import pytest

from disenttalk import media


def frames_and_audio(n: int = 40, h: int = 63, w: int = 85):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    frames[:, 10:40, 10:40] = 60  # something x264 can predict
    audio = (0.3 * np.sin(np.arange(n * 640) / 7)).astype(np.float32)
    return frames, audio


def test_chunks_make_the_same_mp4_as_all_frames_at_once(tmp_path):
    frames, audio = frames_and_audio()
    media.write_video(tmp_path / "whole.mp4", frames, 25.0, audio=audio, preset="veryfast")
    with media.VideoWriter(tmp_path / "chunks.mp4", 25.0, audio, preset="veryfast") as writer:
        for start in range(0, len(frames), 7):
            writer.write(frames[start:start + 7])
        writer.write(frames[0][None][:0])  # an empty chunk writes nothing
    assert writer.frames == len(frames) and writer.size == (63, 85)
    video, whole = media.read_video(tmp_path / "chunks.mp4"), media.read_video(tmp_path / "whole.mp4")
    assert video.frames.shape == whole.frames.shape == (40, 64, 86, 3)  # even sides
    # libx264 on this noise is not bit-reproducible run to run (a few packets in ~1 of 25 runs
    # differ, mean 0.02 levels); a frame dropped, repeated or out of order is ~40 levels off.
    per_frame = np.abs(video.frames.astype(int) - whole.frames).mean(axis=(1, 2, 3))
    assert per_frame.max() < 1.0, per_frame
    np.testing.assert_array_equal(video.audio, whole.audio)


def test_a_failed_write_leaves_no_file(tmp_path):
    frames, _ = frames_and_audio(4)
    with pytest.raises(ValueError, match="after frames of"):
        with media.VideoWriter(tmp_path / "bad.mp4", 25.0) as writer:
            writer.write(frames)
            writer.write(frames[:, :32])  # another size
    with pytest.raises(ValueError, match="non-empty"):
        media.write_video(tmp_path / "empty.mp4", frames[:0], 25.0)
    assert list(tmp_path.iterdir()) == []


def test_engine_video_holds_three_chunks_at_most(tmp_path):
    """Engine.video encodes a chunk in a worker while the next is made, and takes a chunk only
    while at most one waits for the encoder: however long the video, at most three chunks of
    frames are alive (one being made, one queued, one being encoded: the render path's memory
    bound)."""
    import av

    from serve.config import ServeConfig
    from serve.engine import Engine

    alive, most, made = set(), 0, 0

    def chunks(count: int = 30, size: int = 8):
        nonlocal most, made
        rng = np.random.default_rng(1)
        for _ in range(count):
            frames = rng.integers(0, 256, (size, 48, 64, 3), dtype=np.uint8)
            alive.add(id(frames))
            weakref.finalize(frames, alive.discard, id(frames))
            most, made = max(most, len(alive)), made + len(frames)
            yield frames
            del frames

    engine = Engine(ServeConfig())
    body, timing = engine.video(chunks(), 25.0, np.zeros(240 * 640, np.float32))
    assert most <= 3 and made == 240 and timing["size"] == [64, 48]
    path = tmp_path / "v.mp4"
    path.write_bytes(body)
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == made
