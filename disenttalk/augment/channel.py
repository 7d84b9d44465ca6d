"""The recording and transmission channel: a narrow-band telephone line, a lossy codec round
trip and the recorder's level (gain, then hard clipping at full scale).

- ``telephone``: 8 kHz and back with a 300–3400 Hz band-pass (zero-phase, no delay);
- ``codec``: MP3 (libmp3lame), AAC or Opus (libopus, at 48 kHz) at a low bitrate through PyAV,
  in memory; the containers (MP3 with its LAME header, MP4, Ogg) carry the encoder delay, so the
  decoded audio lines up with the input; it is cut or padded to the input's length;
- ``apply_gain``: ± dB, then hard clipping at full scale (±1.0) as a recorder's converter does.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from scipy.signal import butter, firwin, sosfiltfilt

from disenttalk.augment._signal import fit_length, resample
from disenttalk.constants import SAMPLE_RATE

Codec = Literal["mp3", "aac", "opus"]
# PyAV encoder, container (one that records the encoder delay), the rate it is run at (None: input's)
CODECS: dict[str, tuple[str, str, int | None]] = {
    "mp3": ("libmp3lame", "mp3", None),
    "aac": ("aac", "mp4", None),
    "opus": ("libopus", "ogg", 48000),
}


def telephone(audio: np.ndarray, sample_rate: int, low_hz: float = 300.0,
              high_hz: float = 3400.0) -> np.ndarray:
    """A narrow-band telephone channel: 8 kHz, a 300–3400 Hz band-pass (zero-phase), back.

    Both resamplings use a 101-tap low-pass at 3.7 kHz (a deeper stopband than scipy's default
    filter), so nothing above 4 kHz comes back (< -60 dB)."""
    audio = np.asarray(audio, np.float32)
    fir = _telephone_fir(sample_rate)
    narrow = resample(audio, sample_rate, 8000, fir).astype(np.float64)
    sos = butter(6, [low_hz, high_hz], btype="bandpass", fs=8000, output="sos")
    narrow = sosfiltfilt(sos, narrow) if len(narrow) > 3 * 2 * len(sos) else narrow
    return fit_length(resample(narrow.astype(np.float32), 8000, sample_rate, fir), len(audio))


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
    x = resample(audio, sample_rate, rate)
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
    y = fit_length(y, len(x))  # decoders pad the last frame
    return fit_length(resample(y, rate, sample_rate), len(audio))


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """``audio`` × 10^(gain/20), hard-clipped at ±1.0 (full scale) as a recorder would."""
    return np.clip(np.asarray(audio, np.float32) * np.float32(10 ** (gain_db / 20)), -1.0, 1.0)
