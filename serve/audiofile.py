"""An uploaded audio file → float32 mono 16 kHz, decoded packet by packet within the limits.

Only the containers and codecs a client plausibly sends are opened (:data:`ALLOWED`): the
container is told from the file's first bytes and FFmpeg is handed that one demuxer, so no
other demuxer ever parses an upload. A container that declares its length exactly (WAV, FLAC,
Ogg, MP4/M4A, WebM) is refused on that before anything is decoded; otherwise, and whatever a
header claims, decoding stops with 413 ``audio_too_long`` as soon as the samples decoded pass
``limits.max_audio_s``, so a small file of compressed silence never becomes gigabytes of
samples: at most the limit's samples (plus one decoded frame) are held.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from disenttalk.constants import SAMPLE_RATE
from serve.errors import ApiError

# sniffed container → (FFmpeg demuxer, codecs accepted in it)
ALLOWED: dict[str, tuple[str, frozenset[str]]] = {
    "wav": ("wav", frozenset({"pcm"})),  # any PCM (pcm_s16le, pcm_f32le, pcm_mulaw, ...)
    "mp3": ("mp3", frozenset({"mp3", "mp3float"})),
    "ogg": ("ogg", frozenset({"opus", "vorbis", "flac"})),
    "flac": ("flac", frozenset({"flac"})),
    "webm": ("matroska", frozenset({"opus", "vorbis"})),
    "mp4": ("mp4", frozenset({"aac", "alac"})),  # .m4a, .mp4 (its first audio stream)
    "aac": ("aac", frozenset({"aac"})),  # raw ADTS
}
# containers whose header states the length exactly (MP3 and ADTS only estimate it from bitrate)
DECLARES_LENGTH = frozenset({"wav", "flac", "ogg", "webm", "mp4"})
DECLARED_SLACK_S = 0.5  # encoder priming and rounding: a declared length this far over is decoded
ALLOWED_TEXT = ("WAV (PCM), MP3, Ogg (Opus, Vorbis, FLAC), FLAC, WebM (Opus, Vorbis), "
                "M4A/MP4 (AAC, ALAC) or AAC (ADTS)")


def unsupported(message: str) -> ApiError:
    """415 naming what is accepted."""
    return ApiError(415, "unsupported_media", f"{message}; send {ALLOWED_TEXT}", field="audio")


def too_long(seconds: float | None, limit: float) -> ApiError:
    """413 ``audio_too_long`` (``seconds``: the length when known, else only that it is over)."""
    message = (f"the audio is {seconds:.1f} s long; the limit is {limit:g} s" if seconds is not None
               else f"the audio is longer than the limit of {limit:g} s")
    return ApiError(413, "audio_too_long", message, field="audio")


def _webm_doctype(head: bytes) -> bytes | None:
    """The EBML DocType of a Matroska/WebM file (``b"webm"``, ``b"matroska"``), if in ``head``."""
    at = head.find(b"\x42\x82", 4)
    if at < 0 or at + 3 > len(head) or not head[at + 2] & 0x80:
        return None
    size = head[at + 2] & 0x7F
    return head[at + 3:at + 3 + size]


def sniff(data: bytes) -> str | None:
    """The container of ``data`` by its first bytes: a key of :data:`ALLOWED`, ``"mkv"``
    (Matroska that is not WebM: refused) or None."""
    head = data[:64]
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm" if _webm_doctype(head) == b"webm" else "mkv"  # .mkv: refused
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        layer = (head[1] >> 1) & 0x3
        return "aac" if layer == 0 else "mp3"  # MPEG sync word: layer 0 is ADTS
    return None


@contextmanager
def _opened(data: bytes, kind: str) -> Iterator[Any]:
    """The upload opened with its one demuxer; FFmpeg's errors become 415."""
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r", format=ALLOWED[kind][0])
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise unsupported(f"the audio could not be read as {kind.upper()} ({exc})") from None
    try:
        yield container
    except av.FFmpegError as exc:
        raise unsupported(f"the audio could not be decoded ({exc})") from None
    finally:
        container.close()


def _audio_stream(container: Any, kind: str) -> Any:
    """The first audio stream, if its codec is allowed in ``kind``."""
    if not container.streams.audio:
        raise unsupported(f"the {kind.upper()} file has no audio stream")
    stream = container.streams.audio[0]
    codec = stream.codec_context.name
    allowed = ALLOWED[kind][1]
    if codec not in allowed and not ("pcm" in allowed and codec.startswith("pcm_")):
        raise unsupported(f"{codec} audio in {kind.upper()} is not accepted")
    return stream


def declared_seconds(container: Any, stream: Any) -> float | None:
    """The length the file's header states (the longer of the container's and the stream's)."""
    found = []
    if container.duration is not None and container.duration > 0:
        found.append(container.duration / 1_000_000)  # AV_TIME_BASE
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        found.append(float(stream.duration * stream.time_base))
    return max(found) if found else None


def _decoded(container: Any, stream: Any) -> Iterator[np.ndarray]:
    """float32 mono 16 kHz blocks, packet by packet."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    for packet in container.demux(stream):
        for frame in packet.decode():
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1)
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1)


def decode(data: bytes, max_seconds: float) -> np.ndarray:
    """float32 mono 16 kHz samples of an uploaded audio file no longer than ``max_seconds``.

    415 for a container or codec not in :data:`ALLOWED` or a file that does not decode; 413
    ``audio_too_long`` from the declared length or once the decoded samples pass the limit.
    """
    kind = sniff(data)
    if kind not in ALLOWED:
        raise unsupported("Matroska (.mkv) audio is not accepted" if kind == "mkv"
                          else "the audio is not in an accepted format")
    limit = int(round(max_seconds * SAMPLE_RATE))
    with _opened(data, kind) as container:
        stream = _audio_stream(container, kind)
        declared = declared_seconds(container, stream)
        if kind in DECLARES_LENGTH and declared is not None and declared > max_seconds + DECLARED_SLACK_S:
            raise too_long(declared, max_seconds)
        blocks, count = [], 0
        for block in _decoded(container, stream):
            count += len(block)
            if count > limit:
                raise too_long(None, max_seconds)
            blocks.append(block.astype(np.float32, copy=False))
    if not count:
        raise unsupported("the audio stream has no samples")
    return np.concatenate(blocks)
