"""Image metrics: CPBD sharpness (Narvekar & Karam 2011), PSNR, SSIM and frame-to-frame change.

CPBD follows the published algorithm and its reference implementation: Canny edges decide
which 64×64 blocks are edge blocks (more than 0.2% edge pixels); at every Sobel edge pixel of a
vertical edge the edge width is measured along the row, from the pixel beside the edge out to
the nearest local intensity extrema on both sides (Marziliano et al.); each width w in a block
of contrast C gives the probability of detecting blur P = 1 − exp(−|w / w_JNB(C)|^β) with the
just-noticeable-blur width w_JNB = 5 for C ≤ 50 and 3 otherwise, β = 3.6; CPBD is the share of
edges with P ≤ P_JNB = 63%. Simplifications, all documented: grayscale is scikit-image's
luminance; the Canny thresholds are quantiles of the gradient magnitude (70% of pixels are not
edges, the low threshold at the 40% quantile) instead of MATLAB's 0.4 × high ratio; a frame
with no edge block has no CPBD (NaN) instead of 0.
"""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2gray
from skimage.feature import canny
from skimage.filters import sobel_v
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

BLOCK = 64  # block side in pixels
EDGE_BLOCK_FRACTION = 0.002  # a block with more edge pixels than this share is an edge block
BETA = 3.6  # slope of the blur-detection psychometric function
P_JNB = 0.63  # probability of detecting blur at the just-noticeable-blur width
MAX_WIDTH_STEPS = 100  # the reference walks at most 101 pixels to each side


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H,W,3] (or float in [0, 1]) or uint8 gray [H,W] → float64 gray in [0, 255]."""
    image = np.asarray(image)
    if image.ndim == 3:
        return rgb2gray(image) * 255.0  # rgb2gray scales uint8 to [0, 1]
    return image.astype(np.float64)


def _run_length(cond: np.ndarray, reverse: bool = False) -> np.ndarray:
    """Per row, how many consecutive ``True`` end at each column (counting leftwards, or rightwards)."""
    if reverse:
        return _run_length(cond[:, ::-1])[:, ::-1]
    idx = np.arange(cond.shape[1])
    last_false = np.maximum.accumulate(np.where(cond, -1, idx), axis=1)
    return np.where(cond, idx - last_false, 0)


def edge_widths(gray: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Marziliano edge widths [H,W] (0 where not measured) at ``edges`` of gray [H,W]."""
    h, w = gray.shape
    gy, gx = np.gradient(gray)
    angle = np.where(gx != 0, np.degrees(np.arctan2(gy, gx)), np.where(gy == 0, 0.0, 90.0))
    q = 45.0 * np.round(angle / 45.0)
    falling = np.abs(q) == 180  # intensity falls to the right
    rising = q == 0  # intensity rises to the right

    # step[:, j] compares column j with j-1 (j ≥ 1); runs count consecutive monotone steps.
    up_left = np.zeros((h, w), bool)  # img[j-1] > img[j]: walking left from j, intensity rises
    down_left = np.zeros((h, w), bool)  # img[j-1] < img[j]: walking left from j, intensity falls
    up_left[:, 1:] = gray[:, :-1] > gray[:, 1:]
    down_left[:, 1:] = gray[:, :-1] < gray[:, 1:]
    down_right = np.zeros((h, w), bool)  # img[j+1] < img[j]
    up_right = np.zeros((h, w), bool)  # img[j+1] > img[j]
    down_right[:, :-1] = gray[:, 1:] < gray[:, :-1]
    up_right[:, :-1] = gray[:, 1:] > gray[:, :-1]
    runs = {
        "up_left": _run_length(up_left),
        "down_left": _run_length(down_left),
        "down_right": _run_length(down_right, reverse=True),
        "up_right": _run_length(up_right, reverse=True),
    }
    cap = MAX_WIDTH_STEPS
    widths = np.zeros((h, w))
    rows, cols = np.nonzero(edges)
    keep = (rows > 0) & (rows < h - 1) & (cols > 0) & (cols < w - 1)  # the reference skips borders
    rows, cols = rows[keep], cols[keep]
    for mask, left, right in ((falling, "up_left", "down_right"), (rising, "down_left", "up_right")):
        sel = mask[rows, cols]
        r, c = rows[sel], cols[sel]
        wl = 1 + np.minimum(runs[left][r, c - 1], cap)  # from the pixel left of the edge outwards
        wr = 1 + np.minimum(runs[right][r, c + 1], cap)
        widths[r, c] = wl + wr
    return widths


def sobel_vertical_edges(gray: np.ndarray) -> np.ndarray:
    """Vertical edges as MATLAB's ``edge(I, 'sobel', 'vertical')``: |Gx|² > 4·mean, thinned along rows."""
    b = sobel_v(gray) ** 2
    left = np.pad(b, ((0, 0), (1, 0)), mode="edge")[:, :-1]
    right = np.pad(b, ((0, 0), (0, 1)), mode="edge")[:, 1:]
    return (b > 4.0 * b.mean()) & (b > left) & (b > right)


def cpbd(image: np.ndarray) -> float:
    """Cumulative probability of blur detection of one image (higher = sharper), NaN without edges."""
    gray = to_gray(image)
    canny_edges = canny(gray / 255.0, sigma=np.sqrt(2.0), low_threshold=0.4, high_threshold=0.7,
                        use_quantiles=True)
    widths = edge_widths(gray, sobel_vertical_edges(gray))
    probs = []
    h, w = gray.shape
    for i in range(0, h - BLOCK + 1, BLOCK):
        for j in range(0, w - BLOCK + 1, BLOCK):
            blk = (slice(i, i + BLOCK), slice(j, j + BLOCK))
            if np.count_nonzero(canny_edges[blk]) <= BLOCK * BLOCK * EDGE_BLOCK_FRACTION:
                continue
            block_widths = widths[blk][widths[blk] > 0]
            contrast = int(gray[blk].max()) - int(gray[blk].min())
            w_jnb = 5.0 if contrast <= 50 else 3.0
            probs.append(1.0 - np.exp(-np.abs(block_widths / w_jnb) ** BETA))
    if not probs:
        return float("nan")
    p = np.concatenate(probs)
    if p.size == 0:
        return float("nan")
    # The reference bins P to whole percent and sums the bins up to 63%.
    return float(np.mean(np.round(p * 100) <= P_JNB * 100))


def video_cpbd(frames: np.ndarray, stride: int = 1) -> float:
    """Mean CPBD over every ``stride``-th frame of uint8 [T,H,W,3]."""
    values = [cpbd(f) for f in np.asarray(frames)[::stride]]
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def psnr(truth: np.ndarray, test: np.ndarray) -> float:
    """Mean per-frame PSNR in dB of uint8 videos [T,H,W,3] (identical frames count as 100 dB)."""
    truth, test = np.asarray(truth), np.asarray(test)
    values = []
    for a, b in zip(truth, test, strict=True):
        # Identical frames have infinite PSNR; cap so one frame cannot swamp the mean.
        values.append(min(peak_signal_noise_ratio(a, b, data_range=255), 100.0) if np.any(a != b) else 100.0)
    return float(np.mean(values))


def ssim(truth: np.ndarray, test: np.ndarray) -> float:
    """Mean per-frame SSIM of uint8 videos [T,H,W,3]."""
    return float(
        np.mean(
            [
                structural_similarity(a, b, channel_axis=-1, data_range=255)
                for a, b in zip(np.asarray(truth), np.asarray(test), strict=True)
            ]
        )
    )


def pixel_change(frames: np.ndarray) -> np.ndarray:
    """Mean absolute pixel change between consecutive frames, float [T-1] on the 0–255 scale."""
    frames = np.asarray(frames, dtype=np.float32)
    return np.abs(np.diff(frames, axis=0)).mean(axis=tuple(range(1, frames.ndim)))
