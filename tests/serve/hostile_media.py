"""Hostile uploads built in memory: hours of FLAC silence in kilobytes, and files in formats the
server refuses."""

from __future__ import annotations

import io

import numpy as np

from serve.soak_cases import silent_flac

__all__ = ["encoded", "silent_flac"]


def encoded(fmt: str, codec: str, seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A tone in container ``fmt`` with ``codec`` (e.g. ``aiff``/``pcm_s16be``, ``matroska``/``flac``)."""
    import av

    samples = (0.3 * np.sin(np.arange(int(seconds * rate)) / 5)).astype(np.float32)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None], format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        for part in resampler.resample(frame):
            out.mux(stream.encode(part))
        out.mux(stream.encode(None))
    return buf.getvalue()
