"""A tiny talking-head corpus for cluster tests and benchmarks: the astronaut's swaying face with
tones, each clip a different phase of the sway and a different pitch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.ray.conftest import FPS, gradient_frames, portrait_frames, tone


def write_corpus(root: Path, image: np.ndarray, splits: dict[str, int], seconds: float = 2.4,
                 bad: bool = False) -> Path:
    """``root/manifest.jsonl`` + ``root/clips/*.mp4``: ``splits[name]`` good clips per split,
    and with ``bad`` one face-free clip that preprocess must reject."""
    from disenttalk.media import write_video

    (root / "clips").mkdir(parents=True, exist_ok=True)
    base = portrait_frames(image, seconds)
    lines, i = [], 0
    for split, count in splits.items():
        for _ in range(count):
            cid = f"{split}_{i:02d}"
            frames = np.roll(base, 5 * i, axis=0)
            write_video(root / "clips" / f"{cid}.mp4", frames, FPS, tone(seconds, 200.0 + 20 * i))
            lines.append({"clip_id": cid, "path": f"clips/{cid}.mp4", "language": "en",
                          "speaker": f"spk{i % 3}", "sentence": "hello", "duration_s": seconds,
                          "split": split})
            i += 1
    if bad:
        write_video(root / "clips/noface.mp4", gradient_frames(seconds), FPS, tone(seconds))
        lines.append({"clip_id": "noface", "path": "clips/noface.mp4", "language": "en",
                      "speaker": "spk9", "sentence": "", "duration_s": seconds, "split": "train"})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root
