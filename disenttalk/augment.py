"""Audio augmentation for training: seeded transforms of a mono waveform.

Lip motion should follow what is said, not who says it or how it was recorded. Each transform
is a small pure function of (audio, sample rate, parameters, ``np.random.Generator``):

- ``add_noise``: white, pink (1/f), brown (1/f²) or babble (the clip's own time-reversed and
  shifted copies) at an SNR measured over the speech's active part, not its silences;
- ``reverberate``: a synthetic room impulse response (exponentially decaying noise for a drawn
  RT60, the direct path at lag 0, so the speech is not delayed);
- ``telephone``: 8 kHz and back with a 300–3400 Hz band-pass (zero-phase, no delay);
- ``codec``: MP3 (libmp3lame), AAC or Opus (libopus, at 48 kHz) at a low bitrate through PyAV,
  in memory; the containers (MP3 with its LAME header, MP4, Ogg) carry the encoder delay, so the
  decoded audio lines up with the input; it is cut or padded to the input's length;
- ``apply_gain``: ± dB, then hard clipping at full scale (±1.0) as a recorder's converter does;
- ``change_tempo``: WSOLA time-stretch without pitch change; sample ``n`` of the output is the
  input's sample ``n·factor`` (centred frames: no lead or lag), length ``round(len / factor)``.

:func:`augment` applies each with its probability from an :class:`AugmentConfig` and returns the
audio, the tempo factor (to stretch the truth) and the names of what it applied. Everything is
deterministic given the generator's state (no threads inside the codecs).
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Literal

import numpy as np
from pydantic import Field, model_validator
from scipy.signal import butter, fftconvolve, firwin, resample_poly, sosfiltfilt

from disenttalk.config import StrictConfig
from disenttalk.constants import SAMPLE_RATE

NoiseKind = Literal["white", "pink", "brown", "babble", "music"]
Codec = Literal["mp3", "aac", "opus"]
# PyAV encoder, container (one that records the encoder delay), the rate it is run at (None: input's)
CODECS: dict[str, tuple[str, str, int | None]] = {
    "mp3": ("libmp3lame", "mp3", None),
    "aac": ("aac", "mp4", None),
    "opus": ("libopus", "ogg", 48000),
}


def _resample(audio: np.ndarray, rate: int, target: int, fir: np.ndarray | None = None) -> np.ndarray:
    """Polyphase resampling (scipy's default filter, or ``fir`` at the upsampled rate)."""
    if rate == target:
        return np.asarray(audio, np.float32)
    ratio = Fraction(target, rate)
    window = ("kaiser", 5.0) if fir is None else fir
    return resample_poly(audio, ratio.numerator, ratio.denominator, window=window).astype(np.float32)


def _fit_length(audio: np.ndarray, length: int) -> np.ndarray:
    audio = audio[:length]
    return np.pad(audio, (0, length - len(audio))).astype(np.float32)


# -- noise --------------------------------------------------------------------------------------
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


# -- room ---------------------------------------------------------------------------------------
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


# -- channel ------------------------------------------------------------------------------------
def telephone(audio: np.ndarray, sample_rate: int, low_hz: float = 300.0,
              high_hz: float = 3400.0) -> np.ndarray:
    """A narrow-band telephone channel: 8 kHz, a 300–3400 Hz band-pass (zero-phase), back.

    Both resamplings use a 101-tap low-pass at 3.7 kHz (a deeper stopband than scipy's default
    filter), so nothing above 4 kHz comes back (< -60 dB)."""
    audio = np.asarray(audio, np.float32)
    fir = _telephone_fir(sample_rate)
    narrow = _resample(audio, sample_rate, 8000, fir).astype(np.float64)
    sos = butter(6, [low_hz, high_hz], btype="bandpass", fs=8000, output="sos")
    narrow = sosfiltfilt(sos, narrow) if len(narrow) > 3 * 2 * len(sos) else narrow
    return _fit_length(_resample(narrow.astype(np.float32), 8000, sample_rate, fir), len(audio))


def _telephone_fir(sample_rate: int) -> np.ndarray | None:
    """The anti-alias / anti-image filter of 16 kHz ↔ 8 kHz (None for other rates: scipy's)."""
    if sample_rate != SAMPLE_RATE:
        return None
    return firwin(101, 3700, fs=SAMPLE_RATE, window=("kaiser", 8.0))


def codec(audio: np.ndarray, sample_rate: int, name: Codec, bitrate_kbps: float) -> np.ndarray:
    """Encode to ``name`` at ``bitrate_kbps`` in memory and decode: time-aligned, same length."""
    import av

    encoder, container, rate = CODECS[name]
    rate = rate or sample_rate
    audio = np.asarray(audio, np.float32)
    x = _resample(audio, sample_rate, rate)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(encoder, rate=rate)
        stream.layout = "mono"
        stream.bit_rate = int(bitrate_kbps * 1000)
        ctx = stream.codec_context
        ctx.thread_count = 1
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        resampler = av.AudioResampler(format=ctx.codec.audio_formats[0].name, layout="mono",
                                      rate=rate, frame_size=ctx.frame_size or None)
        for chunk in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    pieces = []
    with av.open(io.BytesIO(buf.getvalue()), "r") as inp:
        for decoded in inp.decode(inp.streams.audio[0]):
            pieces.append(decoded.to_ndarray().reshape(-1).astype(np.float32))
    y = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    y = _fit_length(y, len(x))  # decoders pad the last frame
    return _fit_length(_resample(y, rate, sample_rate), len(audio))


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """``audio`` × 10^(gain/20), hard-clipped at ±1.0 (full scale) as a recorder would."""
    return np.clip(np.asarray(audio, np.float32) * np.float32(10 ** (gain_db / 20)), -1.0, 1.0)


# -- tempo --------------------------------------------------------------------------------------
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
        return _fit_length(audio, out_len)
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
    return _fit_length(out.astype(np.float32), out_len)


def pitch_shift(audio: np.ndarray, sample_rate: int, semitones: float) -> np.ndarray:
    """``audio`` with its pitch moved by ``semitones`` and its length kept: stretched in time
    (:func:`change_tempo`) by the pitch factor, then resampled back to the same length (formants
    move with the pitch, as between a deep and a high voice)."""
    factor = 2.0 ** (semitones / 12.0)
    if factor == 1.0:
        return np.asarray(audio, np.float32).copy()
    longer = change_tempo(audio, sample_rate, 1.0 / factor)
    shifted = _resample(longer, int(round(sample_rate * factor)), sample_rate)
    return _fit_length(shifted, len(audio))


# -- config -------------------------------------------------------------------------------------
class _Ranged(StrictConfig):
    @model_validator(mode="after")
    def _ranges(self):
        for name, value in self:
            if isinstance(value, tuple) and len(value) == 2 and all(
                    isinstance(v, (int, float)) for v in value) and value[0] > value[1]:
                raise ValueError(f"{name}: low {value[0]} above high {value[1]}")
        return self


class TempoAugment(_Ranged):
    """Tempo change without pitch change; the truth is stretched to match."""

    prob: float = Field(0.3, ge=0, le=1)
    factor: tuple[float, float] = (0.9, 1.1)  # > 1 faster (shorter)

    @model_validator(mode="after")
    def _positive(self) -> TempoAugment:
        if self.factor[0] <= 0:
            raise ValueError("factor must be positive")
        return self


class PitchAugment(_Ranged):
    """Pitch shift with the length kept (a deeper or higher voice saying the same)."""

    prob: float = Field(0.3, ge=0, le=1)
    semitones: tuple[float, float] = (-6.0, 6.0)


class ReverbAugment(_Ranged):
    """Convolution with a synthetic room impulse response."""

    prob: float = Field(0.3, ge=0, le=1)
    rt60_s: tuple[float, float] = (0.2, 0.8)
    drr_db: tuple[float, float] = (0.0, 10.0)  # direct-to-reverberant energy ratio

    @model_validator(mode="after")
    def _positive(self) -> ReverbAugment:
        if self.rt60_s[0] <= 0:
            raise ValueError("rt60_s must be positive")
        return self


class NoiseAugment(_Ranged):
    """Additive noise at an SNR over the speech's active part."""

    prob: float = Field(0.5, ge=0, le=1)
    snr_db: tuple[float, float] = (5.0, 30.0)
    kinds: tuple[NoiseKind, ...] = ("white", "pink", "brown", "babble", "music")


class GainAugment(_Ranged):
    """Level change, hard-clipped at full scale."""

    prob: float = Field(0.5, ge=0, le=1)
    db: tuple[float, float] = (-24.0, 12.0)  # quiet microphones are common, over-loud ones clip


class TelephoneAugment(_Ranged):
    """8 kHz narrow-band channel."""

    prob: float = Field(0.1, ge=0, le=1)
    band_hz: tuple[float, float] = (300.0, 3400.0)


class CodecAugment(_Ranged):
    """Lossy codec round trip at a low bitrate."""

    prob: float = Field(0.3, ge=0, le=1)
    codecs: tuple[Codec, ...] = ("mp3", "aac", "opus")
    bitrate_kbps: tuple[float, float] = (16.0, 32.0)


class AugmentConfig(StrictConfig):
    """Training-time audio augmentation (the ``augment`` section of ``configs/train.yaml``)."""

    enabled: bool = True
    copies: int = Field(2, ge=0)  # augmented variants made per training clip
    keep_prob: float = Field(0.5, ge=0, le=1)  # share of windows that use the original audio
    tempo: TempoAugment = TempoAugment()
    pitch: PitchAugment = PitchAugment()
    reverb: ReverbAugment = ReverbAugment()
    noise: NoiseAugment = NoiseAugment()
    gain: GainAugment = GainAugment()
    telephone: TelephoneAugment = TelephoneAugment()
    codec: CodecAugment = CodecAugment()

    @property
    def active(self) -> bool:
        """Whether training makes variants at all."""
        return self.enabled and self.copies > 0 and self.keep_prob < 1


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
