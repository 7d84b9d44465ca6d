"""JPEG encoding of rendered frames (stream frames): libjpeg-turbo through simplejpeg, else PIL.

simplejpeg ships libjpeg-turbo in its wheel and encodes a numpy array without a copy into an
image object; PyTurboJPEG needs a system libturbojpeg, so it is not used. PIL (also libjpeg,
but through an ``Image`` and a ``BytesIO``) is the fallback where simplejpeg cannot be imported.
"""

from __future__ import annotations

import io

import numpy as np

try:
    import simplejpeg
except ImportError:  # pragma: no cover - simplejpeg is a dependency; PIL keeps frames coming
    simplejpeg = None

BACKEND = "simplejpeg" if simplejpeg is not None else "pil"  # which library encode_jpeg uses


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of one uint8 RGB frame [H,W,3] at ``quality`` (1..100), 4:2:0 chroma."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 [H,W,3], got {frame.dtype} {frame.shape}")
    if simplejpeg is not None:
        return simplejpeg.encode_jpeg(
            np.ascontiguousarray(frame), quality=int(quality), colorspace="RGB",
            colorsubsampling="420",
        )
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()
