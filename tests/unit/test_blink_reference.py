"""A person's blink rate from other footage of them: generate --blinks-like, evaluate's speaker protocol."""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.face.editors import close_eyes

FPS = 25.0
BLINK = [0.4, 1.0, 1.0, 1.0, 0.7, 0.3]  # a 240 ms closure


@pytest.fixture(scope="module")
def portrait():
    """Astronaut at 256² and its tracked landmarks [478,3]."""
    from skimage import data, transform

    from disenttalk.face.tracker import FaceTracker

    image = (transform.resize(data.astronaut()[:300, 100:400], (256, 256)) * 255).round().astype(np.uint8)
    with FaceTracker(static=True) as tracker:
        landmarks = tracker.track_image(image)
    assert landmarks is not None
    return image, landmarks


def blinking(landmarks: np.ndarray, frames: int, starts: list[int]) -> np.ndarray:
    """Landmarks [frames,478,3] of a face that blinks (BLINK) at each of ``starts``."""
    amount = np.zeros(frames)
    for at in starts:
        amount[at:at + len(BLINK)] = BLINK
    return np.stack([close_eyes(landmarks, a) for a in amount]).astype(np.float32)


def test_blink_count_and_rate_agree(portrait):
    from disenttalk.metrics.landmarks import landmark_blink_count, landmark_blink_rate

    _, lm = portrait
    seq = blinking(lm, 250, [30, 100, 170, 220])  # 4 blinks in 10 s
    assert landmark_blink_count(seq, FPS) == 4
    assert landmark_blink_rate(seq, FPS) == pytest.approx(4 / 10)


def test_speaker_rate_comes_from_the_speakers_other_clips_only(portrait, tmp_path):
    from disenttalk.constants import SAMPLE_RATE
    from workflows.evaluation import speaker_blink_rates
    from workflows.platform import clipstore

    _, lm = portrait
    clips = {  # clip id: (speaker, blink starts in 125 frames)
        "a1": ("spkA", [20, 70]), "a2": ("spkA", [10, 40, 70, 100]), "a3": ("spkA", []),
        "b1": ("spkB", [50]),  # alone: no other footage of spkB
        "c1": ("", [30]),  # no speaker named
    }
    rows = []
    for k, (cid, (speaker, starts)) in enumerate(clips.items()):
        landmarks = blinking(lm, 125, starts)
        rec = clipstore.ClipRecord(
            clip_id=cid, speaker=speaker, language="en", split="test", fps=FPS, landmarks=landmarks,
            valid=np.ones(125, bool), audio=np.zeros(5 * SAMPLE_RATE, np.float32), sample_rate=SAMPLE_RATE,
            features=np.zeros((125, 0), np.float32), source_uri=f"{cid}.mp4", content_hash=f"{k:064x}")
        rows.append(rec.index_row(clipstore.write_record(str(tmp_path), rec)))
    told = speaker_blink_rates(rows, str(tmp_path), ["a1", "a2", "a3", "b1", "c1"])
    assert set(told) == {"a1", "a2", "a3"}
    # each clip is told the rate of the other two: its own blinks never count
    assert told["a1"]["reference_blink_rate"] == pytest.approx(4 / 10)
    assert told["a2"]["reference_blink_rate"] == pytest.approx(2 / 10)
    assert told["a3"]["reference_blink_rate"] == pytest.approx(6 / 10)
    assert told["a1"]["reference_seconds"] == pytest.approx(10.0)


def test_blinks_like_measures_a_video_of_the_person(portrait, tmp_path):
    from disenttalk.media import write_video
    from disenttalk.render import WarpRenderer
    from workflows.generate import GenerateError, reference_blink_rate, run

    image, lm = portrait
    renderer = WarpRenderer(image, lm)
    video = tmp_path / "person.mp4"
    frames = renderer.render(blinking(lm, 200, [25, 90, 150]))  # 3 blinks in 8 s
    write_video(video, frames, FPS)
    assert reference_blink_rate(video, FPS) == pytest.approx(3 / 8)
    short = tmp_path / "short.mp4"
    write_video(short, frames[:75], FPS)
    with pytest.raises(GenerateError, match="at least 5 s"):
        reference_blink_rate(short, FPS)
    with pytest.raises(GenerateError, match="not both"):
        run("unused", "speech.wav", "face.png", str(tmp_path / "out.mp4"), blink_rate=0.2,
            blinks_like=str(video))
