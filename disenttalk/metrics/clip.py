"""All metrics of one clip: a system's output (or a baseline) scored against the truth."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from disenttalk.face import measures
from disenttalk.metrics import image, landmarks
from disenttalk.metrics.sync import MAX_OFFSET, Embedder, sync_sweep

# Metric names, in table order; lower is better for lmd, blink_rate_error, sync_dist.
METRICS = (
    "sync_conf", "sync_dist", "sync_offset", "lmd", "blink_rate", "blink_rate_error",
    "cpbd", "psnr", "ssim", "landmark_change", "pixel_change", "face_found",
    "blink_duration", "lmd_decoded", "mouth_p50", "mouth_p95", "mouth_pause",
)
PAUSE_BELOW_DB = -40.0  # a frame is quiet below the loudest frame's RMS by this much
PAUSE_MARGIN_S = 0.25  # ... and a pause frame is this far from any sound (the lips have settled)


def pause_frames(audio: np.ndarray, sample_rate: int, num_frames: int, fps: float,
                 below_db: float = PAUSE_BELOW_DB, margin_s: float = PAUSE_MARGIN_S) -> np.ndarray:
    """bool [num_frames]: video frames inside a pause, at least ``margin_s`` from any frame whose
    RMS is within ``below_db`` of the loudest (silence before, between and after the speech)."""
    per = sample_rate / fps
    rms = np.zeros(num_frames)
    for k in range(num_frames):
        chunk = np.asarray(audio[int(round(k * per)):int(round((k + 1) * per))], dtype=np.float64)
        rms[k] = np.sqrt((chunk**2).mean()) if len(chunk) else 0.0
    if rms.max() <= 0:
        return np.ones(num_frames, bool)
    loud = rms >= rms.max() * 10.0 ** (below_db / 20.0)
    reach = int(math.ceil(margin_s * fps))
    near = np.convolve(loud.astype(float), np.ones(2 * reach + 1), mode="same") > 0
    return ~near


@dataclass
class Trace:
    """What is scored for one clip: frames uint8 [T,H,W,3] (optional), landmarks [T,478,3], lip params [T,K]."""

    landmarks: np.ndarray
    lip: np.ndarray | None = None
    frames: np.ndarray | None = None


def score_clip(
    test: Trace,
    truth: Trace,
    *,
    fps: float,
    audio_features: np.ndarray | None = None,
    expert: Embedder | None = None,
    truth_blink_rate: float | None = None,
    fidelity: Trace | None = None,
    cpbd_stride: int = 5,
    image_stride: int = 1,
    max_offset: int = MAX_OFFSET,
    window: int = 5,
    pauses: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of ``test`` vs ``truth``; ``fidelity`` (made with the source's pose and eyes) gives PSNR/SSIM.

    ``blink_duration`` is the median length (s) of the eye closures, single-frame dips included;
    ``lmd_decoded`` (LMD of the motion before rendering) is filled in by the caller, who has it.
    ``mouth_p50``/``mouth_p95``: median and 95th percentile of the mouth opening (inner-lip gap
    over face size); ``mouth_pause``: its median over the frames ``pauses`` marks (bool [T], see
    :func:`pause_frames`).

    Without ``fidelity`` PSNR/SSIM compare ``test`` itself with the truth frames, on every
    ``image_stride``-th frame (CPBD on every ``cpbd_stride``-th). Metrics whose
    inputs are missing are NaN, so tables keep one schema.
    """
    t = min(len(test.landmarks), len(truth.landmarks))
    out = dict.fromkeys(METRICS, math.nan)
    found = np.isfinite(test.landmarks[:t]).all(axis=(1, 2))
    out["face_found"] = float(found.mean())  # share of frames where re-tracking found a face
    if not found.any():
        return out  # nothing to measure on: every landmark metric stays NaN
    out["lmd"] = landmarks.lmd(test.landmarks[:t], truth.landmarks[:t])
    out["blink_rate"] = landmarks.landmark_blink_rate(test.landmarks[:t], fps)
    if truth_blink_rate is None:
        truth_blink_rate = landmarks.landmark_blink_rate(truth.landmarks[:t], fps)
    out["blink_rate_error"] = landmarks.blink_rate_error(out["blink_rate"], truth_blink_rate)
    durations = landmarks.blink_durations(test.landmarks[:t], fps)
    out["blink_duration"] = float(np.median(durations)) if len(durations) else math.nan
    opening = measures.mouth_opening(test.landmarks[:t][found])
    out["mouth_p50"], out["mouth_p95"] = (float(v) for v in np.percentile(opening, [50, 95]))
    if pauses is not None and (quiet := np.asarray(pauses[:t], bool)[found]).any():
        out["mouth_pause"] = float(np.median(opening[quiet]))
    change = landmarks.landmark_change(test.landmarks[:t])
    out["landmark_change"] = float(np.nanmean(change)) if np.isfinite(change).any() else math.nan
    if expert is not None and audio_features is not None and test.lip is not None:
        score = sync_sweep(expert, audio_features, test.lip, window=window, max_offset=max_offset)
        out.update(sync_conf=score.conf, sync_dist=score.dist, sync_offset=float(score.offset))
    if test.frames is not None:
        out["cpbd"] = image.video_cpbd(test.frames, stride=cpbd_stride)
        out["pixel_change"] = float(image.pixel_change(test.frames).mean())
        ref = fidelity if fidelity is not None and fidelity.frames is not None else test
        if truth.frames is not None and ref.frames.shape[1:] == truth.frames.shape[1:]:
            n = min(len(ref.frames), len(truth.frames))
            every = slice(0, n, image_stride)  # PSNR/SSIM on every image_stride-th frame
            out["psnr"] = image.psnr(truth.frames[every], ref.frames[every])
            out["ssim"] = image.ssim(truth.frames[every], ref.frames[every])
    return out


def curves(trace: Trace) -> dict[str, np.ndarray]:
    """Per-frame curves for plots: eye aspect ratio [T], mouth opening [T], landmark change [T-1]."""
    return {
        "ear": measures.eye_aspect_ratio(trace.landmarks).mean(-1),
        "mouth": measures.mouth_opening(trace.landmarks),
        "change": landmarks.landmark_change(trace.landmarks),
    }
