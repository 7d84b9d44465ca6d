"""Request payloads → arrays, with the limits and the clear errors the API promises.

Nothing a caller sends becomes a path: uploads are decoded from memory (images by Pillow, audio
by FFmpeg through :mod:`serve.audiofile`).
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from serve.config import Limits
from serve.errors import ApiError


def check_upload(data: bytes, limits: Limits, what: str) -> None:
    """413 past the upload size limit, 400 for an empty part (``what``: the form field)."""
    if not data:
        raise ApiError(400, "empty_upload", f"the {what} upload is empty", field=what)
    limit = int(limits.max_upload_mb * 1024 * 1024)
    if len(data) > limit:
        raise ApiError(413, "upload_too_large",
                       f"the {what} upload is {len(data) / 1e6:.1f} MB; the limit is "
                       f"{limits.max_upload_mb:g} MB", field=what)


def decode_image(data: bytes, limits: Limits, max_side: int | None = None) -> np.ndarray:
    """RGB uint8 [H,W,3] from image file bytes (EXIF rotation applied; shrunk to ``max_side``)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    check_upload(data, limits, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, "image_too_large", "the image has too many pixels", field="image") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise ApiError(415, "unsupported_media",
                       "the image is not a readable image file (send JPEG, PNG, WebP or BMP)",
                       field="image") from None
    if width * height > limits.max_image_pixels:
        raise ApiError(413, "image_too_large",
                       f"the image is {width}x{height} pixels; the limit is "
                       f"{limits.max_image_pixels / 1e6:g} megapixels", field="image")
    if min(width, height) < limits.min_image_side:
        raise ApiError(422, "image_too_small",
                       f"the image is {width}x{height} pixels; a face needs at least "
                       f"{limits.min_image_side} pixels on each side", field="image")
    try:
        img = ImageOps.exif_transpose(img).convert("RGB")  # phone photos: EXIF says "rotated"
        if max_side and max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        image = np.array(img, dtype=np.uint8)  # writable: torch warns on read-only arrays
    except (OSError, ValueError, SyntaxError):
        raise ApiError(415, "unsupported_media", "the image file is truncated or corrupt",
                       field="image") from None
    return np.ascontiguousarray(image)


def decode_audio(data: bytes, limits: Limits) -> np.ndarray:
    """float32 mono 16 kHz from an audio upload in an accepted format (:mod:`serve.audiofile`:
    WAV, MP3, Ogg, FLAC, WebM, M4A/MP4, AAC), decoded packet by packet up to the length limit."""
    from serve import audiofile

    check_upload(data, limits, "audio")
    return audiofile.decode(data, limits.max_audio_s)


def check_duration(seconds: float, limit: float, what: str, field: str | None = "audio") -> None:
    """413 for audio longer than ``limit`` seconds (``field``: the request field it came from)."""
    if seconds > limit:
        raise ApiError(413, "audio_too_long",
                       f"the {what} is {seconds:.1f} s long; the limit is {limit:g} s", field=field)


def pcm16(data: bytes, channels: int = 1) -> np.ndarray:
    """Little-endian PCM16 bytes (interleaved if stereo) → float32 mono in [-1, 1]."""
    if len(data) % (2 * channels):
        raise ApiError(400, "bad_audio_chunk",
                       f"a PCM16 chunk must hold whole samples ({2 * channels} bytes each)")
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return samples
