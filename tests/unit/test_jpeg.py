"""encode_jpeg: stream frames as JPEG (libjpeg-turbo through simplejpeg, PIL as the fallback)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from disenttalk.render import jpeg


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    from skimage import data

    return data.astronaut()[100:356, 150:406]  # a face, 256²


def test_the_turbo_binding_is_installed():
    assert jpeg.BACKEND == "simplejpeg"


@pytest.mark.parametrize("quality", [50, 80, 95])
def test_decodes_back_close_to_the_frame(frame, quality):
    data = jpeg.encode_jpeg(frame, quality)
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert back.shape == frame.shape
    assert psnr(back, frame) > {50: 27.0, 80: 30.0, 95: 35.0}[quality]


def test_quality_orders_the_size(frame):
    assert len(jpeg.encode_jpeg(frame, 50)) < len(jpeg.encode_jpeg(frame, 80)) < len(
        jpeg.encode_jpeg(frame, 95))


def test_as_good_as_pil_at_the_same_quality(frame):
    """libjpeg-turbo and PIL's libjpeg use the same tables at a quality: same size and error."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=80)
    pil = np.asarray(Image.open(buf).convert("RGB"))
    data = jpeg.encode_jpeg(frame, 80)
    ours = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert abs(psnr(ours, frame) - psnr(pil, frame)) < 0.3
    assert abs(len(data) - buf.tell()) < 0.05 * buf.tell()


def test_odd_sizes_and_non_contiguous_views(frame):
    view = frame[1:200:, 3:140][:, ::-1]  # 199×137, negative strides
    back = np.asarray(Image.open(io.BytesIO(jpeg.encode_jpeg(view, 90))).convert("RGB"))
    assert back.shape == view.shape and psnr(back, view) > 30.0


def test_rejects_what_is_not_an_rgb_frame(frame):
    with pytest.raises(ValueError, match="uint8"):
        jpeg.encode_jpeg(frame.astype(np.float32), 80)
    with pytest.raises(ValueError, match="uint8"):
        jpeg.encode_jpeg(frame[..., 0], 80)
