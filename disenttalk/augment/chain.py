"""One augmented version of a clip: the transforms in their order (speaker → room → device →
line), each with its probability and its own child generator."""

from __future__ import annotations

import numpy as np

from disenttalk.augment.channel import apply_gain, codec, telephone
from disenttalk.augment.config import AugmentConfig
from disenttalk.augment.noise import add_noise
from disenttalk.augment.room import reverberate
from disenttalk.augment.tempo import change_tempo, pitch_shift

ORDER = ("tempo", "pitch", "reverb", "noise", "gain", "telephone", "codec")  # speaker → room → device → line


def augment(audio: np.ndarray, sample_rate: int, cfg: AugmentConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, float, list[str]]:
    """One augmented version of ``audio``: (audio, tempo factor, names applied, e.g. "noise:pink").

    Transforms run in :data:`ORDER`, each with its probability; a transform's parameters come
    from its own child generator, so switching one off leaves the others' draws as they were.
    Disabled: the input (a copy), 1.0, [].
    """
    audio = np.asarray(audio, np.float32).copy()
    if not cfg.enabled:
        return audio, 1.0, []
    decisions = rng.random(len(ORDER))
    children = [np.random.default_rng(s) for s in rng.integers(2**63, size=len(ORDER))]
    draws = dict(zip(ORDER, zip(decisions, children, strict=True), strict=True))
    factor, applied = 1.0, []

    def uniform(r: np.random.Generator, bounds: tuple[float, float]) -> float:
        return float(r.uniform(bounds[0], bounds[1]))

    u, r = draws["tempo"]
    if u < cfg.tempo.prob:
        factor = uniform(r, cfg.tempo.factor)
        audio = change_tempo(audio, sample_rate, factor)
        applied.append(f"tempo:{factor:.3f}")
    u, r = draws["pitch"]
    if u < cfg.pitch.prob:
        semitones = uniform(r, cfg.pitch.semitones)
        audio = pitch_shift(audio, sample_rate, semitones)
        applied.append(f"pitch:{semitones:+.1f}st")
    u, r = draws["reverb"]
    if u < cfg.reverb.prob:
        rt60 = uniform(r, cfg.reverb.rt60_s)
        audio = reverberate(audio, sample_rate, rt60, uniform(r, cfg.reverb.drr_db), r)
        applied.append(f"reverb:{rt60:.2f}s")
    u, r = draws["noise"]
    if u < cfg.noise.prob and cfg.noise.kinds:
        kind = cfg.noise.kinds[int(r.integers(len(cfg.noise.kinds)))]
        snr = uniform(r, cfg.noise.snr_db)
        audio = add_noise(audio, sample_rate, snr, kind, r)
        applied.append(f"noise:{kind}:{snr:.1f}dB")
    u, r = draws["gain"]
    if u < cfg.gain.prob:
        gain = uniform(r, cfg.gain.db)
        audio = apply_gain(audio, gain)
        applied.append(f"gain:{gain:+.1f}dB")
    u, r = draws["telephone"]
    if u < cfg.telephone.prob:
        audio = telephone(audio, sample_rate, *cfg.telephone.band_hz)
        applied.append("telephone")
    u, r = draws["codec"]
    if u < cfg.codec.prob and cfg.codec.codecs:
        name = cfg.codec.codecs[int(r.integers(len(cfg.codec.codecs)))]
        kbps = uniform(r, cfg.codec.bitrate_kbps)
        audio = codec(audio, sample_rate, name, kbps)
        applied.append(f"codec:{name}:{kbps:.0f}k")
    return np.clip(audio, -1.0, 1.0).astype(np.float32), factor, applied
