"""Landmark metrics: mouth landmark distance (LMD), frame-to-frame change, blink rate.

Normalisation (so values compare across clips, resolutions and trackers): every frame of the
test landmarks is aligned onto the truth frame by the least-squares similarity transform
(rotation, uniform scale, translation; Umeyama) estimated on *stable* points — eye corners,
nose bridge and tip, forehead and the cheek ends of the face oval, none of which move with
speech or blinks — and distances are then divided by the truth's inter-ocular distance (outer
eye corners). LMD is therefore "mouth landmark error in units of inter-ocular distance"; the
alignment removes head pose and framing so only mouth shape counts. Only x, y are used: the
tracker's z is a relative depth estimate too noisy to compare.
"""

from __future__ import annotations

import numpy as np
from skimage.transform import SimilarityTransform

from disenttalk.face import measures, topology

# Points that keep their place on the skull whatever the mouth and eyelids do.
STABLE = (
    topology.RIGHT_EYE_OUTER, 133, 362, topology.LEFT_EYE_OUTER,  # eye corners
    168, 6, topology.NOSE_TIP, topology.NOSE_BOTTOM,  # nose bridge and tip
    topology.FOREHEAD, 234, 454,  # forehead, cheek ends of the face oval
)


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners in the image plane, [T] for landmarks [T,478,D]."""
    return measures.face_size(np.asarray(landmarks)[..., :2])


def align_to(test: np.ndarray, truth: np.ndarray, points: tuple[int, ...] = STABLE) -> np.ndarray:
    """``test`` [T,478,D] mapped frame by frame onto ``truth`` by a similarity on ``points``; x, y only."""
    out = np.full(test.shape[:2] + (2,), np.nan)
    idx = list(points)
    for i, (src, dst) in enumerate(zip(test[..., :2], truth[..., :2], strict=True)):
        if not (np.isfinite(src[idx]).all() and np.isfinite(dst[idx]).all()):
            continue  # no face in this frame (NaN landmarks): leave it out
        tform = SimilarityTransform.from_estimate(src[idx].astype(np.float64), dst[idx].astype(np.float64))
        if tform:  # a failed estimate (degenerate points) is falsy
            out[i] = tform(src.astype(np.float64))
    return out


def lmd_per_frame(test: np.ndarray, truth: np.ndarray, points: tuple[int, ...] = topology.LIPS) -> np.ndarray:
    """Mean mouth-landmark distance per frame [T] in inter-ocular units (NaN where a face is missing)."""
    test, truth = np.asarray(test, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if test.shape[0] != truth.shape[0]:
        raise ValueError(f"frame counts differ: {test.shape[0]} vs {truth.shape[0]}")
    aligned = align_to(test, truth)
    idx = list(points)
    dist = np.linalg.norm(aligned[:, idx] - truth[:, idx, :2], axis=-1).mean(axis=1)
    return dist / inter_ocular(truth)


def lmd(test: np.ndarray, truth: np.ndarray, points: tuple[int, ...] = topology.LIPS) -> float:
    """LMD of a clip: mean over frames of :func:`lmd_per_frame` (inter-ocular units)."""
    per_frame = lmd_per_frame(test, truth, points)
    return float(np.nanmean(per_frame)) if np.isfinite(per_frame).any() else float("nan")


def landmark_change(landmarks: np.ndarray) -> np.ndarray:
    """Mean absolute landmark motion between consecutive frames, [T-1] in inter-ocular units."""
    landmarks = np.asarray(landmarks, dtype=np.float64)[..., :2]
    step = np.linalg.norm(np.diff(landmarks, axis=0), axis=-1).mean(axis=1)
    return step / inter_ocular(landmarks)[1:]


def blink_rate_error(rate: float, truth_rate: float) -> float:
    """Absolute blink-rate error in blinks per second."""
    return float(abs(rate - truth_rate))


def poisson_rate_interval(count: int, seconds: float, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) ``level`` confidence interval of an event rate per second from ``count``
    events in ``seconds``: how far a split's true blink rate may lie from the rate its few blinks
    show (8 blinks in 34 s: 0.10–0.46 /s around 0.24)."""
    from scipy.stats import chi2

    if count < 0 or seconds <= 0:
        raise ValueError(f"need count ≥ 0 and seconds > 0, got {count}, {seconds}")
    tail = (1.0 - level) / 2.0
    low = 0.0 if count == 0 else chi2.ppf(tail, 2 * count) / 2.0
    high = chi2.ppf(1.0 - tail, 2 * count + 2) / 2.0
    return float(low / seconds), float(high / seconds)


def landmark_blink_rate(landmarks: np.ndarray, fps: float) -> float:
    """Blinks per second from landmarks [T,478,3]: eye aspect ratio → blink detection (face.measures)."""
    return measures.blink_rate(measures.eye_aspect_ratio(landmarks), fps)


def landmark_blink_count(landmarks: np.ndarray, fps: float) -> int:
    """Number of blinks in landmarks [T,478,3] (as :func:`landmark_blink_rate` counts them)."""
    return len(measures.detect_blinks(measures.eye_aspect_ratio(landmarks), fps))


def blink_durations(landmarks: np.ndarray, fps: float) -> np.ndarray:
    """Durations (s) of every eye closure in landmarks [T,478,3], single-frame dips included
    (``min_frames=1``), so flicker shows up as 40 ms closures beside real 100–400 ms blinks."""
    blinks = measures.detect_blinks(measures.eye_aspect_ratio(landmarks), fps, min_frames=1)
    return np.array([end - start for start, end in blinks], dtype=np.float64)
