"""How preprocess cuts a source video into clips: shot cuts, face gaps, a length cap, streaming."""

from __future__ import annotations

import numpy as np
import pytest

from workflows.preprocess.segments import CutDetector, SegmentConfig, Segmenter

FPS = 25.0


def faces(n: int, centre=(100.0, 100.0), size=60.0) -> np.ndarray:
    """Landmarks [n,478,3] of a still face: a square of side ``size`` around ``centre``."""
    rng = np.random.default_rng(0)
    pts = np.zeros((478, 3), np.float32)
    pts[:, :2] = rng.uniform(-size / 2, size / 2, (478, 2)) + np.asarray(centre)
    pts[0, :2], pts[1, :2] = np.asarray(centre) - size / 2, np.asarray(centre) + size / 2
    return np.repeat(pts[None], n, axis=0)


def run(landmarks, valid, cuts=None, chunk=50, **cfg) -> list[tuple[int, int]]:
    """Push in chunks as preprocess does; the (start, stop) frames of the clips."""
    seg = Segmenter(FPS, SegmentConfig(**cfg), min_s=1.0)
    cuts = np.zeros(len(valid), bool) if cuts is None else cuts
    out = []
    for a in range(0, len(valid), chunk):
        out += seg.push(landmarks[a : a + chunk], valid[a : a + chunk], cuts[a : a + chunk])
    out += seg.finish()
    for s in out:  # each clip carries its own frames
        np.testing.assert_array_equal(s.valid, valid[s.start : s.stop])
    return [(s.start, s.stop) for s in out]


def test_a_short_clip_is_one_segment():
    n = 120
    assert run(faces(n), np.ones(n, bool)) == [(0, 120)]


def test_long_spans_are_cut_into_parts_no_longer_than_the_length():
    n = int(65 * FPS)  # 65 s of one shot
    spans = run(faces(n), np.ones(n, bool), length_s=10.0)
    assert spans[0] == (0, 250) and spans[-1][1] == n
    assert all(b - a <= 250 for a, b in spans) and all(b - a >= 25 for a, b in spans)
    assert all(s[1] == t[0] for s, t in zip(spans[:-1], spans[1:], strict=True))  # no frame lost
    assert len(spans) == 7  # 6 × 10 s, then the last 15 s in two equal parts (no 5 s stub)
    assert abs((spans[-2][1] - spans[-2][0]) - (spans[-1][1] - spans[-1][0])) <= 1


def test_shot_cuts_and_long_face_gaps_end_a_clip_and_short_gaps_do_not():
    n = 300
    valid = np.ones(n, bool)
    valid[:10] = False  # trimmed off the start
    valid[100:105] = False  # 0.2 s: bridged
    valid[200:230] = False  # 1.2 s: ends the clip
    cuts = np.zeros(n, bool)
    cuts[150] = True
    assert run(faces(n), valid, cuts, max_face_gap_s=0.5) == [(10, 150), (150, 200), (230, 300)]


def test_a_face_that_jumps_or_changes_size_is_a_cut():
    lms = np.concatenate([faces(100), faces(100, centre=(300.0, 100.0)), faces(100, size=120.0)])
    # the third shot's face is at the first one's place, twice the size: also a cut
    lms[200:, :, :2] = faces(100, centre=(300.0, 100.0), size=120.0)[:, :, :2]
    assert run(lms, np.ones(300, bool)) == [(0, 100), (100, 200), (200, 300)]


def test_memory_is_bounded_by_the_length_not_the_video():
    seg = Segmenter(FPS, SegmentConfig(length_s=4.0), min_s=1.0)
    held = 0
    chunk = faces(50)
    for _ in range(200):  # 400 s of video
        seg.push(chunk, np.ones(50, bool), np.zeros(50, bool))
        held = max(held, len(seg.ok))
    assert held <= 2 * 100 + 50


def test_cut_detector_finds_a_cut_across_chunks_and_not_in_a_swaying_shot(astronaut):
    from skimage import data

    sway = np.stack([np.roll(astronaut[:256, 128:384], 3 * i, axis=0) for i in range(40)])
    other = np.repeat(data.chelsea()[:256, :256][None], 20, axis=0)  # another scene: a cat
    video = np.concatenate([sway, other])
    det = CutDetector()
    cuts = np.concatenate([det.update(video[a : a + 16]) for a in range(0, len(video), 16)])
    assert np.flatnonzero(cuts).tolist() == [40]


@pytest.mark.parametrize("bad", [{"length_s": 0}, {"chunk_frames": 0}, {"cut_threshold": -1}])
def test_segment_config_is_checked(bad):
    with pytest.raises(ValueError):
        SegmentConfig(**bad)
