"""Reverberation: a synthetic room impulse response (exponentially decaying noise for a drawn
RT60, the direct path at lag 0, so the speech is not delayed)."""

from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve


def room_impulse_response(sample_rate: int, rt60: float, drr_db: float,
                          rng: np.random.Generator) -> np.ndarray:
    """A synthetic RIR: 1 at lag 0 (the direct sound), then Gaussian noise decaying 60 dB in
    ``rt60`` seconds, scaled so direct / reverberant energy is ``drr_db``; unit energy."""
    length = max(2, int(rt60 * sample_rate))  # to -60 dB
    t = np.arange(1, length) / sample_rate
    tail = rng.standard_normal(length - 1) * 10 ** (-3 * t / rt60)
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    rir = np.concatenate([[1.0], tail])
    return rir / np.sqrt(np.sum(rir**2))


def reverberate(audio: np.ndarray, sample_rate: int, rt60: float, drr_db: float,
                rng: np.random.Generator) -> np.ndarray:
    """``audio`` in a synthetic room: same length, no delay of the direct sound, same RMS."""
    audio = np.asarray(audio, np.float32)
    rir = room_impulse_response(sample_rate, rt60, drr_db, rng)
    out = fftconvolve(audio.astype(np.float64), rir)[: len(audio)]
    before, after = np.sqrt(np.mean(audio.astype(np.float64) ** 2)), np.sqrt(np.mean(out**2))
    if after > 0:
        out *= before / after
    return out.astype(np.float32)
