"""The fast render path: chunks encoded in the background while the next renders, the next window
of motion sampled while this one's frames render; the same video."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from disenttalk import media
from disenttalk.render.background import Ahead, BackgroundWriter, map_in_order


class Recorder:
    """A writer that records what it was given, slowly, and in which thread."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.chunks, self.threads, self.fail_at = [], set(), fail_at

    def write(self, frames: np.ndarray) -> None:
        if self.fail_at is not None and len(self.chunks) == self.fail_at:
            raise ValueError("chunk refused")
        time.sleep(0.01)
        self.chunks.append(frames)
        self.threads.add(threading.get_ident())


def test_chunks_are_written_in_order_in_one_other_thread():
    rec = Recorder()
    with BackgroundWriter(rec) as writer:
        for k in range(6):
            writer.write(np.full((2, 4, 4, 3), k, np.uint8))
    assert [int(c[0, 0, 0, 0]) for c in rec.chunks] == list(range(6))
    assert rec.threads and threading.get_ident() not in rec.threads
    assert writer.busy_s >= 0.05


def test_an_error_of_the_writer_comes_back_to_the_caller():
    rec = Recorder(fail_at=1)
    with pytest.raises(ValueError, match="chunk refused"):
        with BackgroundWriter(rec) as writer:
            for k in range(10):
                writer.write(np.full((1, 2, 2, 3), k, np.uint8))
    assert len(rec.chunks) == 1  # nothing after the failed chunk is written


def test_leaving_on_an_error_stops_the_worker():
    rec = Recorder()
    with pytest.raises(KeyError):
        with BackgroundWriter(rec) as writer:
            writer.write(np.zeros((1, 2, 2, 3), np.uint8))
            raise KeyError("render failed")
    assert not writer._thread.is_alive()


def made(log: list, count: int, fail_at: int | None = None):
    """Items 0..count-1, made slowly; the thread of each and how far it got go into ``log``."""
    for k in range(count):
        if k == fail_at:
            raise ValueError("window failed")
        time.sleep(0.01)
        log.append((k, threading.get_ident()))
        yield k


def test_ahead_gives_the_items_in_order_made_in_one_other_thread():
    log = []
    with Ahead(made(log, 6)) as items:
        assert list(items) == list(range(6))
    assert {t for _, t in log} != {threading.get_ident()} and len({t for _, t in log}) == 1
    assert items.busy_s >= 0.05


def test_ahead_hands_an_error_of_the_items_to_the_caller_in_its_place():
    with Ahead(made([], 5, fail_at=2)) as items:
        got = []
        with pytest.raises(ValueError, match="window failed"):
            for k in items:
                got.append(k)
    assert got == [0, 1]


def test_a_caller_that_leaves_stops_the_worker_after_its_current_item():
    log = []
    with pytest.raises(KeyError):
        with Ahead(made(log, 100), depth=1) as items:
            next(iter(items))
            raise KeyError("render failed")
    assert not items._thread.is_alive()
    assert len(log) <= 4  # the one taken, one queued, the one being made when it left


def test_map_in_order_gives_the_results_in_order_from_items_taken_as_threads_free():
    taken, running, most = [], 0, 0
    lock = threading.Lock()

    def items():
        for k in range(12):
            taken.append(k)
            yield k

    def slow(k: int) -> tuple[int, int]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02 if k % 3 else 0.05)  # later items often finish first
        with lock:
            running -= 1
        return k, threading.get_ident()

    out = []
    for k, ident in map_in_order(slow, items(), workers=3):
        out.append((k, ident))
        assert len(taken) <= k + 1 + 3  # taken only as a thread frees
    assert [k for k, _ in out] == list(range(12))
    assert most == 3 and threading.get_ident() not in {i for _, i in out}
    # one worker: the caller's own thread, one item at a time
    assert {i for _, i in map_in_order(slow, range(3), workers=1)} == {threading.get_ident()}


def test_map_in_order_hands_back_an_error_and_a_caller_that_leaves_starts_nothing_more():
    def fail_at_2(k: int) -> int:
        if k == 2:
            raise ValueError("chunk failed")
        return k

    got = []
    with pytest.raises(ValueError, match="chunk failed"):
        for k in map_in_order(fail_at_2, range(8), workers=2):
            got.append(k)
    assert got == [0, 1]
    started = []

    def slow(k: int) -> int:
        started.append(k)
        time.sleep(0.02)
        return k

    results = map_in_order(slow, range(100), workers=2)
    assert next(results) == 0
    results.close()  # the caller left: the one in hand finishes, nothing else starts
    time.sleep(0.05)
    assert len(started) <= 3


def test_the_engine_video_is_the_video_of_the_same_frames_written_at_once(tmp_path):
    """Pipelined encoding changes nothing in the file: x264 sees the same frames in order."""
    from serve.config import ServeConfig
    from serve.engine import Engine

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (40, 48, 64, 3), dtype=np.uint8)
    frames[:, 8:30, 8:30] = 90  # something x264 can predict
    audio = (0.3 * np.sin(np.arange(40 * 640) / 7)).astype(np.float32)
    engine = Engine(ServeConfig())
    chunks = (frames[i:i + 7] for i in range(0, len(frames), 7))
    body, timing = engine.video(chunks, 25.0, audio)
    # x264 on one thread, as the engine's: on several its output is not always the same bytes
    with media.VideoWriter(tmp_path / "whole.mp4", 25.0, audio, preset=engine.cfg.video_preset,
                           threads=1) as writer:
        writer.write(frames)
    assert body == (tmp_path / "whole.mp4").read_bytes()
    assert timing["size"] == [64, 48] and timing["encode_s"] > 0


@pytest.fixture(scope="module")
def talking(astronaut_256):
    """The renderer on the astronaut and 40 frames of speech-like targets with two blinks."""
    from disenttalk.render import WarpRenderer
    from disenttalk.render.benchmark import talking_targets

    portrait, landmarks = astronaut_256
    return WarpRenderer(portrait, landmarks), talking_targets(landmarks, 40)


def test_a_frame_is_the_same_whatever_chunk_renders_it(talking):
    """Each frame is drawn on its own: a blink in a chunk does not paint the open-eyed frames
    beside it, and the box a chunk renders does not change a frame."""
    renderer, targets = talking
    whole = renderer.render(targets)
    alone = np.stack([renderer.render(t) for t in targets[:12]])
    diff = np.abs(alone.astype(int) - whole[:12])
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4  # float sums in another order


def test_only_the_moving_box_is_drawn_the_rest_is_the_photo(talking):
    renderer, targets = talking
    frames = renderer.render(targets[:8])
    with torch.inference_mode():
        float_frames, (x0, y0, x1, y1) = renderer.render_box(torch.as_tensor(targets[:8, :, :2]))
    assert 0 < x1 - x0 < renderer.width or 0 < y1 - y0 < renderer.height  # a part, not all
    outside = np.ones(frames.shape[1:3], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(frames[:, outside], np.broadcast_to(renderer.portrait[outside],
                                                              frames[:, outside].shape))
    inside = (float_frames + 0.5).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    assert np.array_equal(frames[:, y0:y1, x0:x1], inside)


def test_the_sampling_grid_is_bilinear_upsampling_of_the_coarse_field(talking):
    """sampling_grid of a box = F.interpolate of the sampling positions over the image, cut."""
    import torch.nn.functional as F

    renderer, targets = talking
    field = renderer.field
    with torch.inference_mode():
        t = torch.as_tensor(targets[:4, :, :2])
        back = field.backward_field(t - renderer._source_t, 4)
        s = field.grid.expand(4, -1, -1, -1).permute(0, 3, 1, 2) + back
        full = F.interpolate(s, size=(field.height, field.width), mode="bilinear",
                             align_corners=True).permute(0, 2, 3, 1)
        w, h = field.width, field.height
        for x0, y0, x1, y1 in [(30, 40, 200, 230), (0, 0, w, h), (w - 3, h - 1, w, h), (7, 9, 8, 10)]:
            ours = field.sampling_grid(back, (x0, y0, x1, y1))
            torch.testing.assert_close(ours, full[:, y0:y1, x0:x1], atol=2e-6, rtol=0)
        assert field.sampling_grid(back, (0, 0, 0, 0)).shape == (4, 0, 0, 2)  # nothing moves
