"""Square face crops that follow the face smoothly, and their inverse (paste back).

As in FOMM's crop-video tool, each frame's box is the landmarks' bounding box widened by a
margin; here the box centre and side are then smoothed over time (Gaussian, in frames) so the
crop does not jitter with the tracker. Frames without a face take the box interpolated from
their neighbours. Resampling is one batched ``grid_sample`` (bilinear); strong downscaling is
antialiased first so small crops from large frames do not alias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

_CHUNK = 32  # frames per grid_sample call: bounds memory on long HD clips


def _to_tensor(frames: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()


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

    def crop(self, frames: np.ndarray) -> np.ndarray:
        """Cut the boxes out of uint8 [T,H,W,3] frames → uint8 [T,size,size,3]."""
        import torch
        import torch.nn.functional as F

        out = []
        theta = self._theta(inverse=False)
        # Antialias once for the whole clip when boxes are much larger than the crop.
        shrink = float(np.median(self.sides) / self.size)
        for i in range(0, len(frames), _CHUNK):
            x = _to_tensor(frames[i:i + _CHUNK])
            if shrink > 1.5:
                x = F.interpolate(x, scale_factor=1 / shrink, mode="bilinear", antialias=True)
            grid = F.affine_grid(theta[i:i + _CHUNK], [len(x), 3, self.size, self.size],
                                 align_corners=False)
            with torch.no_grad():
                out.append(_to_uint8(F.grid_sample(x, grid, mode="bilinear",
                                                   padding_mode="border", align_corners=False)))
        return np.concatenate(out)

    def paste(self, frames: np.ndarray, crops: np.ndarray, feather: float = 0.03) -> np.ndarray:
        """Put crops [T,S,S,3] back into copies of frames [T,H,W,3] (soft-edged by ``feather``).

        S is usually ``size``; crops of the same boxes at another resolution go back the same way."""
        import torch
        import torch.nn.functional as F

        h, w = self.frame_shape
        size = crops.shape[1]  # any resolution of the same boxes (``size`` or a sharper one)
        ramp = max(feather * size, 1.0)
        edge = np.minimum(np.arange(size) + 0.5, size - np.arange(size) - 0.5)
        alpha1d = np.clip(edge / ramp, 0, 1)
        alpha = torch.from_numpy(np.outer(alpha1d, alpha1d)).float()[None, None]  # [1,1,S,S]
        theta = self._theta(inverse=True)
        out = []
        for i in range(0, len(frames), _CHUNK):
            src = _to_tensor(crops[i:i + _CHUNK])
            a_src = alpha.expand(len(src), 1, -1, -1)
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
