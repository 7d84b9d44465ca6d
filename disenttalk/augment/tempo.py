"""Tempo and pitch: WSOLA time-stretch without pitch change (sample ``n`` of the output is the
input's sample ``n·factor``: centred frames, no lead or lag; length ``round(len / factor)``), and
a pitch shift built on it that keeps the length."""

from __future__ import annotations

import numpy as np

from disenttalk.augment._signal import fit_length, resample


def change_tempo(audio: np.ndarray, sample_rate: int, factor: float, frame_ms: float = 30.0,
                 tolerance_ms: float = 8.0) -> np.ndarray:
    """WSOLA: ``factor`` × faster (> 1 shorter), pitch kept; length ``round(len / factor)``.

    Output frames of ``frame_ms`` (Hann, 50 % overlap) centred at k·hop are taken from the input
    near k·hop·factor, shifted within ± ``tolerance_ms`` to continue the previous frame's waveform
    best, so output time t shows input time t·factor (within the tolerance).
    """
    audio = np.asarray(audio, np.float32)
    out_len = int(round(len(audio) / factor))
    if factor == 1.0 or len(audio) < 2:
        return fit_length(audio, out_len)
    n = int(sample_rate * frame_ms / 1000) // 2 * 2
    hop, tol = n // 2, int(sample_rate * tolerance_ms / 1000)
    window = np.hanning(n + 1)[:n]  # periodic: 50 % overlaps sum to 1
    pad = n // 2 + tol + n
    x = np.pad(audio.astype(np.float64), (pad, pad + int(n * factor) + hop))
    frames = out_len // hop + 2
    out = np.zeros((frames + 1) * hop + n)
    previous = None  # where the last frame was taken from (padded input coordinates)
    for k in range(frames):
        nominal = pad + int(round(k * hop * factor)) - n // 2  # frame start, centred at k·hop·factor
        start = nominal
        if previous is not None:
            target = x[previous + hop : previous + hop + n]  # the natural continuation
            region = x[nominal - tol : nominal + tol + n]
            score = np.correlate(region, target, mode="valid")
            start = nominal - tol + int(np.argmax(score))
        out[k * hop : k * hop + n] += x[start : start + n] * window
        previous = start
    out = out[n // 2 :]  # output frame k is centred at k·hop
    return fit_length(out.astype(np.float32), out_len)


def pitch_shift(audio: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """``audio`` with its pitch moved by ``semitones`` and its length kept: stretched in time
    (:func:`change_tempo`) by the pitch factor, then resampled back to the same length (formants
    move with the pitch, as between a deep and a high voice)."""
    factor = 2.0 ** (semitones / 12.0)
    if factor == 1.0:
        return np.asarray(audio, np.float32).copy()
    longer = change_tempo(audio, sample_rate, 1.0 / factor)
    shifted = resample(longer, int(round(sample_rate * factor)), sample_rate)
    return fit_length(shifted, len(audio))
