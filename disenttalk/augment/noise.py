"""Additive noise at an SNR over the speech's active part: white, pink (1/f), brown (1/f²),
babble (the clip's own time-reversed and shifted copies) or synthetic music."""

from __future__ import annotations

from typing import Literal

import numpy as np

NoiseKind = Literal["white", "pink", "brown", "babble", "music"]


def active_mask(audio: np.ndarray, sample_rate: int, floor_db: float = 30.0) -> np.ndarray:
    """Samples in 20 ms frames whose power is within ``floor_db`` of the loud frames' (the
    95th percentile), i.e. the speech, not the silence between words; bool [S]."""
    audio = np.asarray(audio, np.float64)
    hop = max(1, sample_rate // 50)
    frames = -(-len(audio) // hop)
    power = np.pad(audio, (0, frames * hop - len(audio))).reshape(frames, hop)
    power = (power**2).mean(1)
    loud = np.quantile(power, 0.95) if frames else 0.0
    if loud <= 0:
        return np.zeros(len(audio), bool)
    active = power >= loud * 10 ** (-floor_db / 10)
    return np.repeat(active, hop)[: len(audio)]


def snr_db(clean: np.ndarray, noise: np.ndarray, sample_rate: int) -> float:
    """SNR of ``clean`` against ``noise`` over the active part of ``clean``."""
    mask = active_mask(clean, sample_rate)
    signal = float(np.mean(np.asarray(clean, np.float64)[mask] ** 2))
    return 10 * np.log10(signal / float(np.mean(np.asarray(noise, np.float64)[mask] ** 2)))


def coloured_noise(length: int, exponent: float, sample_rate: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power ∝ 1/f^exponent (0 white, 1 pink, 2 brown), nothing below 20 Hz."""
    if exponent == 0:
        return rng.standard_normal(length)
    spectrum = rng.standard_normal(length // 2 + 1) + 1j * rng.standard_normal(length // 2 + 1)
    freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
    shape = np.zeros_like(freqs)
    shape[freqs >= 20] = freqs[freqs >= 20] ** (-exponent / 2)
    return np.fft.irfft(spectrum * shape, n=length)


def babble(audio: np.ndarray, rng: np.random.Generator, talkers: tuple[int, int] = (3, 6)) -> np.ndarray:
    """Babble-like noise: a few of the clip's own copies, each time-reversed or not and shifted."""
    audio = np.asarray(audio, np.float64)
    out = np.zeros_like(audio)
    for _ in range(int(rng.integers(talkers[0], talkers[1] + 1))):
        copy = audio[::-1] if rng.random() < 0.5 else audio
        out += np.roll(copy, int(rng.integers(len(audio))))
    return out


def music(length: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Synthetic music: plucked notes of a random major scale (harmonics 1–4, decaying) at a
    random tempo over a held chord, so the mouth learns that tones without speech are no speech."""
    t = np.arange(length) / sample_rate
    root = 110.0 * 2 ** (rng.integers(0, 24) / 12)  # A2 … G#4
    scale = root * 2 ** (np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16]) / 12)
    beat = rng.uniform(0.15, 0.6)  # s between notes
    out = np.zeros(length)
    for start in np.arange(rng.uniform(0, beat), length / sample_rate, beat):
        s = int(start * sample_rate)
        tt = t[: length - s]
        f = scale[rng.integers(len(scale))] * 2 ** int(rng.integers(0, 2))
        decay = rng.uniform(2.0, 8.0)
        out[s:] += np.exp(-decay * tt) * sum(np.sin(2 * np.pi * f * h * tt + rng.uniform(0, 6.28)) / h
                                             for h in (1, 2, 3, 4))
    chord = root * 2 ** (np.array([0, 4, 7]) / 12) / 2
    out += rng.uniform(0.1, 0.5) * sum(np.sin(2 * np.pi * f * t) for f in chord)
    return out


def add_noise(audio: np.ndarray, sample_rate: int, snr: float, kind: NoiseKind,
              rng: np.random.Generator) -> np.ndarray:
    """``audio`` plus noise of ``kind`` scaled to ``snr`` dB over the speech's active part.
    Silent audio (nothing active) comes back unchanged."""
    audio = np.asarray(audio, np.float32)
    mask = active_mask(audio, sample_rate)
    if not mask.any():
        return audio.copy()
    if kind == "babble":
        noise = babble(audio, rng)
    elif kind == "music":
        noise = music(len(audio), sample_rate, rng)
    else:
        noise = coloured_noise(len(audio), {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind],
                               sample_rate, rng)
    signal = np.mean(audio[mask].astype(np.float64) ** 2)
    current = np.mean(noise[mask] ** 2)
    if current <= 0:
        return audio.copy()
    noise *= np.sqrt(signal / current * 10 ** (-snr / 10))
    return (audio + noise).astype(np.float32)
