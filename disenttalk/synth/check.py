"""Scoring rendered demo clips against their truth: re-track, then compare mouth and blinks.

A clip passes when FaceMesh, run on the rendered video, sees the mouth move as the truth says
(Pearson r of ``mouth_opening`` curves) and finds the true blinks with ``detect_blinks`` (a
detection and a true blink match when their intervals overlap; one-to-one, in time order).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def match_intervals(truth: np.ndarray, found: Sequence[tuple[float, float]]) -> int:
    """Number of one-to-one overlapping pairs between intervals truth [K,2] and ``found``."""
    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 2)
    used = np.zeros(len(truth), dtype=bool)
    matched = 0
    for start, end in sorted(found):
        hits = np.flatnonzero(~used & (truth[:, 0] < end) & (truth[:, 1] > start))
        if len(hits):
            used[hits[0]] = True
            matched += 1
    return matched


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over frames where both are finite (NaN when either curve is constant)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def score_clip(video_path: str | Path, truth_path: str | Path, tracker=None) -> dict:
    """Re-track one clip: mouth-opening r, blink counts (true, found, matched), valid fraction."""
    from disenttalk.face.measures import detect_blinks, eye_aspect_ratio, mouth_opening
    from disenttalk.face.tracker import FaceTracker
    from disenttalk.media import read_video

    video = read_video(video_path, with_audio=False)
    tracks = (tracker or FaceTracker()).track(video.frames)
    truth = np.load(truth_path)
    found = detect_blinks(eye_aspect_ratio(tracks.landmarks), video.fps)
    return {
        "mouth_r": pearson(mouth_opening(tracks.landmarks), truth["mouth_opening"]),
        "blinks_true": int(len(truth["blinks"])),
        "blinks_found": len(found),
        "blinks_matched": match_intervals(truth["blinks"], found),
        "valid": tracks.fraction_valid,
        "frames_match": len(video.frames) == len(truth["landmarks"]),
    }


def score_corpus(root: str | Path, rows: Sequence[dict] | None = None, progress: bool = True) -> dict:
    """Scores of every clip in ``root/manifest.jsonl`` (or ``rows``) and their aggregate."""
    from tqdm import tqdm

    from disenttalk.face.tracker import FaceTracker
    from disenttalk.synth.corpus import read_corpus_manifest

    root = Path(root)
    rows = read_corpus_manifest(root) if rows is None else rows
    tracker = FaceTracker()
    per_clip = {}
    for row in tqdm(rows, desc="re-tracking", unit="clip", disable=not progress):
        per_clip[row["clip_id"]] = score_clip(root / row["path"], root / row["truth"], tracker)
    scores = list(per_clip.values())
    true = sum(s["blinks_true"] for s in scores)
    found = sum(s["blinks_found"] for s in scores)
    matched = sum(s["blinks_matched"] for s in scores)
    rs = np.array([s["mouth_r"] for s in scores], dtype=np.float64)
    return {
        "clips": len(scores),
        "mouth_r_mean": float(np.nanmean(rs)) if len(rs) else float("nan"),
        "mouth_r_min": float(np.nanmin(rs)) if len(rs) else float("nan"),
        "blink_recall": matched / true if true else float("nan"),
        "blink_precision": matched / found if found else float("nan"),
        "blinks_true": true,
        "blinks_found": found,
        "valid_min": min((s["valid"] for s in scores), default=float("nan")),
        "per_clip": per_clip,
    }
