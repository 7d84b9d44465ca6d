"""Eye blinks and head sway for the demo corpus, both independent of speech.

Blinks follow physiological statistics: a renewal process with a 0.8 s refractory gap plus an
exponential wait (mean rate ≈ 0.3 /s, i.e. one every ~3.3 s), closures of 100–400 ms that shut
fast and reopen slowly, held fully shut for at least one video frame so every blink is visible at
25 fps. Head sway is a small similarity transform (roll, translation, scale) made of a few slow
sinusoids with random phases.
"""

from __future__ import annotations

import numpy as np

BLINK_RATE_HZ = 0.3
REFRACTORY_S = 0.8
BLINK_MIN_S, BLINK_MAX_S = 0.10, 0.40


def sample_blinks(
    duration_s: float, rng: np.random.Generator, rate_hz: float = BLINK_RATE_HZ, margin_s: float = 0.2
) -> np.ndarray:
    """Blink intervals [K,2] (start, end) in seconds, all inside [margin_s, duration_s - margin_s]."""
    wait_mean = max(1.0 / rate_hz - REFRACTORY_S, 0.1)
    out = []
    # The process is stationary: the first blink may come at any point of a wait.
    t = margin_s + rng.uniform(0.0, 1.0) * rng.exponential(wait_mean)
    while True:
        length = rng.uniform(BLINK_MIN_S, BLINK_MAX_S)
        if t + length > duration_s - margin_s:
            break
        out.append((t, t + length))
        t += length + REFRACTORY_S + rng.exponential(wait_mean)
    return np.array(out, dtype=np.float64).reshape(-1, 2)


def blink_closure(blinks: np.ndarray, times: np.ndarray, fps: float) -> np.ndarray:
    """Eyelid closure in [0,1] at ``times`` [T] for blink intervals [K,2]: a skewed trapezoid."""
    closure = np.zeros(len(times))
    for start, end in np.asarray(blinks).reshape(-1, 2):
        length = end - start
        hold = max(0.25 * length, 1.5 / fps)  # fully shut for over one frame
        ramp = max(length - hold, 1e-3)
        shut, reopen = start + 0.35 * ramp, end - 0.65 * ramp  # closing is faster than opening
        up = np.clip((times - start) / max(shut - start, 1e-3), 0.0, 1.0)
        down = np.clip((end - times) / max(end - reopen, 1e-3), 0.0, 1.0)
        closure = np.maximum(closure, np.minimum(up, down))
    return closure


def head_sway(
    times: np.ndarray, rng: np.random.Generator, roll_deg: float = 1.5, shift_px: float = 2.5,
    scale: float = 0.01,
) -> np.ndarray:
    """Per-frame similarity parameters [T,4]: (roll rad, dx px, dy px, log-scale), zero-mean."""
    out = np.zeros((len(times), 4))
    amplitudes = (np.deg2rad(roll_deg), shift_px, shift_px, scale)
    for j, amp in enumerate(amplitudes):
        for _ in range(2):  # two sinusoids per parameter: 0.1–0.6 Hz
            freq = rng.uniform(0.1, 0.6)
            out[:, j] += 0.5 * amp * rng.uniform(0.5, 1.0) * np.sin(2 * np.pi * freq * times + rng.uniform(0, 2 * np.pi))
    return out


def apply_similarity(landmarks: np.ndarray, params: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Rotate/scale landmarks [T,N,3] (pixels) about ``centre`` (x, y) and shift, per frame."""
    roll, dx, dy, log_s = (params[:, k][:, None] for k in range(4))  # each [T,1]
    s = np.exp(log_s)
    x = landmarks[..., 0] - centre[0]
    y = landmarks[..., 1] - centre[1]
    out = landmarks.copy()
    out[..., 0] = s * (np.cos(roll) * x - np.sin(roll) * y) + centre[0] + dx
    out[..., 1] = s * (np.sin(roll) * x + np.cos(roll) * y) + centre[1] + dy
    out[..., 2] = s * landmarks[..., 2]  # depth scales with the face
    return out
