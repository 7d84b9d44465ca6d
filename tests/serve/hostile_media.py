"""Hostile uploads built in memory: hours of FLAC silence in kilobytes, and files in formats the
server refuses."""

from __future__ import annotations

import io
import struct

import numpy as np


def _crc(data: bytes, poly: int, bits: int) -> int:
    """FLAC's CRC-8 (poly 0x07) and CRC-16 (poly 0x8005): MSB first, init 0."""
    top, mask, crc = 1 << (bits - 1), (1 << bits) - 1, 0
    for byte in data:
        crc ^= byte << (bits - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
    return crc


def _utf8_number(n: int) -> bytes:
    """A FLAC frame number, coded like UTF-8 (up to 3 bytes here)."""
    if n < 0x80:
        return bytes([n])
    if n < 0x800:
        return bytes([0xC0 | n >> 6, 0x80 | n & 0x3F])
    return bytes([0xE0 | n >> 12, 0x80 | (n >> 6) & 0x3F, 0x80 | n & 0x3F])


def silent_flac(seconds: float, rate: int = 16000, block: int = 64000, declare: bool = True) -> bytes:
    """Mono 16-bit FLAC silence, each frame one CONSTANT subframe of ``block`` samples: an hour is
    ~13 kB. ``declare=False`` leaves STREAMINFO's total sample count 0 (unknown), so only
    decoding tells the length."""
    total = int(seconds * rate)
    frames = -(-total // block)
    info = struct.pack(">HH", block, block) + b"\0" * 6  # block sizes; frame sizes unknown
    packed = (rate << 44) | (0 << 41) | (15 << 36) | (total if declare else 0)  # mono, 16 bits
    info += packed.to_bytes(8, "big") + b"\0" * 16  # no MD5
    out = bytearray(b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info)
    for n in range(frames):
        size = min(block, total - n * block)
        header = bytes([0xFF, 0xF8, 0x70, 0x08]) + _utf8_number(n) + struct.pack(">H", size - 1)
        frame = header + bytes([_crc(header, 0x07, 8)]) + b"\x00\x00\x00"  # CONSTANT 0
        out += frame + struct.pack(">H", _crc(frame, 0x8005, 16))
    return bytes(out)


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
