"""Square face crops that follow the face smoothly, and their inverse (paste back).

As in FOMM's crop-video tool, each frame's box is the landmarks' bounding box widened by a
margin; here the box centre and side are then smoothed over time (Gaussian, in frames) so the
crop does not jitter with the tracker. Frames without a face take the box interpolated from
their neighbours. Resampling is one batched ``grid_sample`` (bilinear); strong downscaling is
antialiased first so small crops from large frames do not alias.

A box may reach past the frame (a tight crop of a face: forehead or chin outside the photo). The
part of the crop outside the frame is filled from the frame's border: its pixels carried outward
(``grid_sample``'s border padding) and smoothed more the further out they lie, so the ring is a
still, soft continuation of the photo's edge instead of streaks; nothing outside the frame is
ever pasted back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

CROP_SIZE = 256  # the paper's 256×256 crops
CROP_MARGIN = 0.3  # box side = landmark extent × (1 + 2·margin)
_CHUNK = 32  # frames per grid_sample call: bounds memory on long HD clips
STILL_FEATHER = 0.01  # a moving region is grown and feathered by this share of the crop side
# Padding outside the frame: blurred copies of the border-padded crop, the n-th smoothed over
# 2^n crop pixels (at 256 px); a pixel d crop pixels outside takes level log2(1 + d / _PAD_RAMP).
_PAD_LEVELS = 6
_PAD_RAMP = 1.0


def framing(recorded: Mapping[str, Any] | None = None) -> tuple[int, float]:
    """(crop size, crop margin) of the face crop: as a bundle records it (``meta["framing"]``,
    from the store it was trained on), else the defaults preprocessing uses."""
    recorded = recorded or {}
    return int(recorded.get("crop_size", CROP_SIZE)), float(recorded.get("crop_margin", CROP_MARGIN))


def _to_tensor(frames: np.ndarray):
    import torch

    # one copy, straight to float (a read-only array, e.g. a Ray object, cannot be shared)
    return torch.tensor(frames, dtype=torch.float32).permute(0, 3, 1, 2)


def _to_uint8(images) -> np.ndarray:
    import torch

    return images.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@dataclass
class CropTransform:
    """Per-frame crop boxes: centres [T,2] and sides [T] in source pixels, crop ``size`` px."""

    centres: np.ndarray
    sides: np.ndarray
    size: int
    frame_shape: tuple[int, int]  # (H, W) of the source frames

    @property
    def scale(self) -> np.ndarray:
        """Crop pixels per source pixel [T]."""
        return self.size / self.sides

    def apply(self, landmarks: np.ndarray) -> np.ndarray:
        """Source-pixel landmarks [T,P,3] → crop pixels (z scales with x)."""
        lm = np.asarray(landmarks, dtype=np.float64)
        origin = self.centres - self.sides[:, None] / 2  # [T,2] top-left corner
        out = lm * self.scale[:, None, None]
        out[..., :2] = (lm[..., :2] - origin[:, None, :]) * self.scale[:, None, None]
        return out.astype(np.float32)

    def invert(self, landmarks: np.ndarray) -> np.ndarray:
        """Crop-pixel landmarks [T,P,3] → source pixels (inverse of :meth:`apply`)."""
        lm = np.asarray(landmarks, dtype=np.float64)
        origin = self.centres - self.sides[:, None] / 2
        out = lm / self.scale[:, None, None]
        out[..., :2] += origin[:, None, :]
        return out.astype(np.float32)

    def _theta(self, inverse: bool):
        """Affine grids' θ [T,2,3] in normalised coordinates (align_corners=False)."""
        import torch

        h, w = self.frame_shape
        c = np.stack([2 * self.centres[:, 0] / w - 1, 2 * self.centres[:, 1] / h - 1], -1)
        s = np.stack([self.sides / w, self.sides / h], -1)  # crop half-extent, normalised
        theta = np.zeros((len(self.sides), 2, 3))
        if inverse:  # frame → crop: u = (x − c) / s
            theta[:, [0, 1], [0, 1]] = 1 / s
            theta[:, :, 2] = -c / s
        else:  # crop → frame: x = s·u + c
            theta[:, [0, 1], [0, 1]] = s
            theta[:, :, 2] = c
        return torch.from_numpy(theta).float()

    def outside(self) -> np.ndarray:
        """Share of each box's area [T] that lies outside the frame."""
        h, w = self.frame_shape
        lo, hi = self.centres - self.sides[:, None] / 2, self.centres + self.sides[:, None] / 2
        inside = np.clip(np.minimum(hi, [w, h]) - np.maximum(lo, 0), 0, None).prod(-1)
        return 1.0 - inside / np.maximum(self.sides ** 2, 1e-9)

    def crop(self, frames: np.ndarray, smooth_outside: bool = True) -> np.ndarray:
        """Cut the boxes out of uint8 [T,H,W,3] frames → uint8 [T,size,size,3].

        Where a box reaches past the frame, the crop there is the frame's border carried outward
        and smoothed with the distance (see the module's docstring), or only carried outward
        without ``smooth_outside``."""
        import torch
        import torch.nn.functional as F

        out = []
        theta = self._theta(inverse=False)
        padded = (self.outside() > 0) & smooth_outside
        # Antialias once for the whole clip when boxes are much larger than the crop.
        shrink = float(np.median(self.sides) / self.size)
        for i in range(0, len(frames), _CHUNK):
            x = _to_tensor(frames[i:i + _CHUNK])
            if shrink > 1.5:
                x = F.interpolate(x, scale_factor=1 / shrink, mode="bilinear", antialias=True)
            grid = F.affine_grid(theta[i:i + _CHUNK], [len(x), 3, self.size, self.size],
                                 align_corners=False)
            with torch.no_grad():
                crops = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
                if padded[i:i + _CHUNK].any():
                    crops = self._smooth_outside(crops, grid, self.scale[i:i + _CHUNK])
            out.append(_to_uint8(crops))
        return np.concatenate(out)

    def _smooth_outside(self, crops, grid, scale: np.ndarray):
        """Border-padded crops [T,3,S,S] with their pixels outside the frame smoothed by distance.

        ``grid`` [T,S,S,2] holds each crop pixel's place in the frame (normalised, as sampled);
        ``scale`` [T] crop pixels per frame pixel."""
        import torch
        import torch.nn.functional as F

        h, w = self.frame_shape
        size = crops.shape[-1]
        # distance past the frame's edge in frame pixels, then in crop pixels
        px = (grid[..., 0] + 1) * w / 2 - 0.5
        py = (grid[..., 1] + 1) * h / 2 - 0.5
        dx = torch.clamp(torch.maximum(-0.5 - px, px - (w - 0.5)), min=0)
        dy = torch.clamp(torch.maximum(-0.5 - py, py - (h - 0.5)), min=0)
        dist = torch.sqrt(dx ** 2 + dy ** 2) * torch.from_numpy(scale).float()[:, None, None]
        level = torch.log2(1 + dist / (_PAD_RAMP * size / 256.0)).clamp(max=_PAD_LEVELS - 1)
        # the pyramid: each level is the crop shrunk by 2^n (antialiased) and grown back
        levels = [crops]
        for n in range(1, _PAD_LEVELS):
            side = max(size >> n, 2)
            small = F.interpolate(crops, size=(side, side), mode="bilinear", antialias=True)
            levels.append(F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False))
        stack = torch.stack(levels)  # [L,T,3,S,S]
        lo = level.floor().long().clamp(max=_PAD_LEVELS - 1)
        hi = (lo + 1).clamp(max=_PAD_LEVELS - 1)
        frac = (level - lo)[:, None]
        pick = lambda idx: torch.gather(stack, 0, idx[None, :, None].expand(1, -1, 3, -1, -1))[0]  # noqa: E731
        smooth = pick(lo) * (1 - frac) + pick(hi) * frac
        return torch.where((dist > 0)[:, None], smooth, crops)

    def paste(self, frames: np.ndarray, crops: np.ndarray, feather: float = 0.03,
              still: np.ndarray | None = None) -> np.ndarray:
        """Put crops [T,S,S,3] back into copies of frames [T,H,W,3] (soft-edged by ``feather``).

        S is usually ``size``; crops of the same boxes at another resolution go back the same way.
        ``still`` [S,S,3]: the crop the frames were drawn on (the photo's own box); only where a
        crop differs from it (grown and feathered by ``STILL_FEATHER`` of S) is it pasted, so
        everything that did not move keeps the frame's own pixels instead of a resampled copy."""
        import torch
        import torch.nn.functional as F

        h, w = self.frame_shape
        size = crops.shape[1]  # any resolution of the same boxes (``size`` or a sharper one)
        ramp = max(feather * size, 1.0)
        edge = np.minimum(np.arange(size) + 0.5, size - np.arange(size) - 0.5)
        alpha1d = np.clip(edge / ramp, 0, 1)
        alpha = torch.from_numpy(np.outer(alpha1d, alpha1d)).float()[None, None]  # [1,1,S,S]
        theta = self._theta(inverse=True)
        reach = max(int(round(STILL_FEATHER * size)), 1)
        out = []
        for i in range(0, len(frames), _CHUNK):
            src = _to_tensor(crops[i:i + _CHUNK])
            a_src = alpha.expand(len(src), 1, -1, -1)
            if still is not None:  # moved: differs from the still crop, grown, then feathered
                moved = (src != _to_tensor(np.asarray(still)[None])).any(1, keepdim=True).float()
                # on cells of ``reach`` pixels: a cell that moved and its neighbours are 1, and
                # bilinear upsampling feathers the edge over a cell, so every pixel that moved
                # is pasted whole
                cells = F.max_pool2d(moved, reach, stride=reach, ceil_mode=True)
                cells = F.max_pool2d(cells, 3, stride=1, padding=1)
                moved = F.interpolate(cells, size=moved.shape[-2:], mode="bilinear",
                                      align_corners=False)
                a_src = a_src * moved
            rgba = torch.cat([src * a_src, a_src], dim=1)  # premultiplied, so edges blend
            grid = F.affine_grid(theta[i:i + _CHUNK], [len(src), 4, h, w], align_corners=False)
            with torch.no_grad():
                warped = F.grid_sample(rgba, grid, mode="bilinear", padding_mode="zeros",
                                       align_corners=False)
            a = warped[:, 3:]
            base = _to_tensor(frames[i:i + _CHUNK])
            out.append(_to_uint8(warped[:, :3] + (1 - a) * base))
        return np.concatenate(out)


def crop_boxes(
    landmarks: np.ndarray, frame_shape: tuple[int, int], size: int = 256,
    margin: float = 0.3, smooth: float = 4.0,
) -> CropTransform:
    """Square boxes around landmarks [T,478,3]: bbox side × (1 + 2·margin), smoothed over ``smooth`` frames."""
    lm = np.asarray(landmarks, dtype=np.float64)[..., :2]
    ok = np.isfinite(lm).all(axis=(1, 2))
    if not ok.any():
        raise ValueError("crop_boxes: no frame has a face")
    lo, hi = lm.min(1), lm.max(1)  # [T,2]
    centres = (lo + hi) / 2
    sides = (hi - lo).max(-1) * (1 + 2 * margin)
    t = np.arange(len(lm))
    # Faceless frames borrow the box from their neighbours (held at the ends).
    centres = np.stack([np.interp(t, t[ok], centres[ok, k]) for k in range(2)], -1)
    sides = np.interp(t, t[ok], sides[ok])
    if smooth > 0 and len(t) > 1:
        centres = gaussian_filter1d(centres, smooth, axis=0, mode="nearest")
        sides = gaussian_filter1d(sides, smooth, mode="nearest")
    return CropTransform(centres=centres, sides=sides, size=size, frame_shape=tuple(frame_shape))


def crop_clip(
    frames: np.ndarray, landmarks: np.ndarray, size: int = 256, margin: float = 0.3,
    smooth: float = 4.0,
) -> tuple[np.ndarray, CropTransform]:
    """Face crops uint8 [T,size,size,3] of frames [T,H,W,3] and the transform that made them."""
    transform = crop_boxes(landmarks, frames.shape[1:3], size=size, margin=margin, smooth=smooth)
    return transform.crop(frames), transform
