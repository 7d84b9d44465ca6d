"""Shared signal helpers of the augmentation transforms: resampling and length fitting."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly


def resample(audio: np.ndarray, rate: int, target: int, fir: np.ndarray | None = None) -> np.ndarray:
    """Polyphase resampling (scipy's default filter, or ``fir`` at the upsampled rate)."""
    if rate == target:
        return np.asarray(audio, np.float32)
    ratio = Fraction(target, rate)
    window = ("kaiser", 5.0) if fir is None else fir
    return resample_poly(audio, ratio.numerator, ratio.denominator, window=window).astype(np.float32)


def fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    """``audio`` cut or zero-padded to ``length`` samples, float32."""
    audio = audio[:length]
    return np.pad(audio, (0, length - len(audio))).astype(np.float32)
