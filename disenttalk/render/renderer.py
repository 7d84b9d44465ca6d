"""``WarpRenderer``: landmarks → frames of one portrait (the stand-in for the paper's PIRenderer).

A frame is the portrait warped by a thin-plate spline through the landmark displacements
(a ring around the face and a lattice over the background beyond it stay still, so the
background does not move), then painted where a warp cannot show the target: an open mouth
(cavity and teeth) and a lowered eyelid. Painting reads the lip and lid contours as curves
over image columns, which holds for faces within a few tens of degrees of upright.
Per frame the cost is one GEMM for the spline, small grid_samples for its inverse, one
full-size grid_sample and the painting of three small boxes; everything else is set up once.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from disenttalk.config import StrictConfig
from disenttalk.face import topology as topo
from disenttalk.render.paint import paint_eyelid, paint_mouth
from disenttalk.render.warp import ThinPlateField, still_anchors

_INNER_UPPER, _INNER_LOWER = list(topo.LIPS_INNER_UPPER), list(topo.LIPS_INNER_LOWER)
# Cheeks, forehead and nose bridge: skin that is neither lips, eyes, brows nor (usually) beard.
_SKIN = (50, 280, 101, 330, 117, 346, 118, 347, 205, 425, 36, 266, 151, 9, 108, 337, 6, 197)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_EYES = (  # (upper lid, lower lid, eyebrow) per eye; lids share their corner points
    (list(topo.RIGHT_EYE_UPPER), list(topo.RIGHT_EYE_LOWER), list(topo.RIGHT_EYEBROW)),
    (list(topo.LEFT_EYE_UPPER), list(topo.LEFT_EYE_LOWER), list(topo.LEFT_EYEBROW)),
)


class RenderConfig(StrictConfig):
    """Settings of the warp renderer (sizes in pixels unless said otherwise)."""

    grid_size: int = 64  # coarse grid the spline is evaluated on before upsampling
    regularization: float = 1e-5  # TPS smoothing; keeps nearby conflicting points from folding
    inverse_iterations: int = 4  # fixed-point steps inverting the forward field
    anchor_ring_scale: float = 1.6  # still ring = face oval scaled about its centre
    anchor_lattice: int = 16  # still background points per side beyond the ring
    chunk_frames: int = 32  # frames rendered per batched call
    feather: float = 1.0  # anti-aliasing ramp of painted edges
    mouth_open_ramp: float = 0.06  # extra opening (× mouth width) that fully paints the cavity
    teeth_fraction: float = 0.16  # visible upper-teeth height (× mouth width)
    # Mouth colours come from the portrait itself (so grey, dim or low-contrast photos get a mouth
    # in their own tones): the cavity is its lip colour darkened, the teeth its skin tone
    # desaturated at the brightness of its skin highlights. A colour given here overrides that.
    cavity_rgb: tuple[int, int, int] | None = None
    teeth_rgb: tuple[int, int, int] | None = None
    cavity_darkness: float = 0.2  # cavity = lip colour × this
    teeth_brightness: float = 0.92  # teeth luminance = skin highlight luminance × this
    teeth_saturation: float = 0.3  # share of the skin's hue kept in the teeth (0 = grey)
    corner_shade: float = 0.45  # cavity and teeth darken by this much into the mouth corners
    lash_darkness: float = 0.35  # lash colour = skin colour × this
    lash_width: float = 0.07  # lash-line half width (× eye width)
    lid_grow: float = 0.06  # painted lid skin reaches this far past the eye outline (× eye width)
    lid_shade: float = 0.15  # a closed lid darkens by this share from its crease side to its edge


class WarpRenderer:
    """Renders a portrait under target landmarks [T,478,3] at the portrait's own resolution."""

    def __init__(
        self,
        portrait: np.ndarray,
        portrait_landmarks: np.ndarray,
        *,
        device: str | torch.device = "cpu",
        config: RenderConfig | None = None,
    ) -> None:
        self.config = cfg = config or RenderConfig()
        self.device = torch.device(device)
        portrait = np.asarray(portrait)
        if portrait.ndim != 3 or portrait.shape[2] != 3 or portrait.dtype != np.uint8:
            raise ValueError(
                f"portrait must be uint8 [H,W,3], got {portrait.dtype} {portrait.shape}"
            )
        lm = np.asarray(portrait_landmarks, dtype=np.float32)
        if lm.shape != (topo.NUM_LANDMARKS, 3):
            raise ValueError(f"portrait_landmarks must be [478,3], got {lm.shape}")
        self.height, self.width = h, w = portrait.shape[:2]
        self.source = lm[:, :2].copy()  # [478,2] x, y pixels
        centres = self.source - 0.5  # pixel-index coordinates (pixel i's centre at i)
        oval = centres[list(topo.FACE_OVAL)]
        anchors = still_anchors(oval, cfg.anchor_ring_scale, h, w, cfg.anchor_lattice)
        self.field = ThinPlateField(
            centres, anchors, h, w, cfg.grid_size, cfg.regularization, self.device
        )
        self.image = torch.as_tensor(portrait, device=self.device).permute(2, 0, 1)[None].float()
        self._source_t = torch.as_tensor(self.source, device=self.device)
        cavity, teeth = self._mouth_colours(portrait)
        self._cavity = torch.tensor(cavity, dtype=torch.float32, device=self.device)
        self._teeth = torch.tensor(teeth, dtype=torch.float32, device=self.device)
        self._skin = [self._lid_skin(portrait, up, br) for up, _, br in _EYES]
        src = self._source_t
        self._mouth_opening = (src[_INNER_LOWER] - src[_INNER_UPPER]).norm(dim=-1).amax()

    # -- portrait-only quantities ------------------------------------------------------------
    def _sample(self, portrait: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Portrait colours [P,3] float at pixel positions [P,2] (nearest pixel, clipped)."""
        xy = np.clip(np.floor(points).astype(int), 0, [self.width - 1, self.height - 1])
        return portrait[xy[:, 1], xy[:, 0]].astype(np.float32)

    def _mouth_colours(self, portrait: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cavity, teeth) RGB [3] float from the portrait's lips and skin (or the config's colours)."""
        cfg, src = self.config, self.source
        # Lip colour: points half way between the outer and the inner lip contours.
        lips = np.concatenate([
            0.5 * (src[list(topo.LIPS_OUTER_UPPER)] + src[_INNER_UPPER]),
            0.5 * (src[list(topo.LIPS_OUTER_LOWER)] + src[_INNER_LOWER]),
        ])[1:-1]  # drop a corner point (shared by the contours)
        lip = np.median(self._sample(portrait, lips), 0)
        skin = self._sample(portrait, src[list(_SKIN)])
        luma = skin @ _LUMA
        tone = np.median(skin, 0)
        highlight = float(np.percentile(luma, 95))
        grey = float(tone @ _LUMA)
        # the skin's hue, mostly washed out, at the brightness of the skin's highlights
        hue = tone / max(grey, 1.0)
        teeth = highlight * cfg.teeth_brightness * (1.0 + cfg.teeth_saturation * (hue - 1.0))
        cavity = lip * cfg.cavity_darkness
        if cfg.cavity_rgb is not None:
            cavity = np.asarray(cfg.cavity_rgb, np.float32)
        if cfg.teeth_rgb is not None:
            teeth = np.asarray(cfg.teeth_rgb, np.float32)
        return np.clip(cavity, 0, 255), np.clip(teeth, 0, 255)

    def _lid_skin(self, portrait: np.ndarray, upper: list[int], brow: list[int]) -> torch.Tensor:
        """Median colour of the lid skin between the upper lid and the eyebrow, [3] float."""
        lid = self.source[upper]  # [V,2]
        lift = self.source[brow, 1].mean() - lid[:, 1].mean()  # negative: the brow is above
        samples = np.concatenate([lid + [0.0, f * lift] for f in (0.25, 0.35, 0.45)])
        colours = self._sample(portrait, samples)
        # Lashes, brow hairs and glasses frames are darker than the lid skin: leave out the
        # darkest 40 % of the samples before taking the median.
        keep = np.argsort(colours @ _LUMA)[int(0.4 * len(colours)):]
        return torch.tensor(np.median(colours[keep], 0), device=self.device)

    # -- rendering ---------------------------------------------------------------------------
    def render(self, target_landmarks: np.ndarray | torch.Tensor) -> np.ndarray:
        """Target landmarks [T,478,2|3] (or one [478,2|3]) → frames uint8 [T,H,W,3] (or [H,W,3])."""
        target = torch.as_tensor(np.asarray(target_landmarks), dtype=torch.float32)
        single = target.ndim == 2
        target = target[None] if single else target
        if target.ndim != 3 or target.shape[1] != topo.NUM_LANDMARKS:
            raise ValueError(f"target_landmarks must be [T,478,2|3], got {tuple(target.shape)}")
        out = np.empty((target.shape[0], self.height, self.width, 3), np.uint8)
        with torch.inference_mode():
            for start in range(0, target.shape[0], self.config.chunk_frames):
                chunk = target[start : start + self.config.chunk_frames, :, :2].to(self.device)
                # Bilinear sampling and alpha blending are convex, so frames stay within 0..255:
                # no clamp needed. The cast truncates, so +0.5 rounds to nearest.
                frames = self.render_tensor(chunk).add_(0.5)  # [B,3,H,W]
                torch.from_numpy(out[start : start + len(chunk)]).copy_(frames.permute(0, 2, 3, 1))
        return out[0] if single else out

    def render_tensor(self, target: torch.Tensor) -> torch.Tensor:
        """Batched core: target x, y [B,478,2] pixels → frames [B,3,H,W] float in 0..255."""
        grid = self.field.backward_grid(target - self._source_t, self.config.inverse_iterations)
        image = self.image.expand(target.shape[0], -1, -1, -1)
        frames = F.grid_sample(
            image, grid, mode="bilinear", padding_mode="border", align_corners=True
        )
        self._paint_mouth(frames, target)
        for (upper, lower, _), skin in zip(_EYES, self._skin, strict=True):
            self._paint_eye(frames, target, upper, lower, skin)
        return frames

    def _paint_mouth(self, frames: torch.Tensor, target: torch.Tensor) -> None:
        """Cavity and teeth, in place, where the target mouth opens beyond the portrait's."""
        cfg = self.config
        upper, lower = target[:, _INNER_UPPER], target[:, _INNER_LOWER]  # [B,V,2]
        width = (upper[:, -1] - upper[:, 0]).norm(dim=-1)  # [B]
        opening = (lower - upper).norm(dim=-1).amax(-1)  # [B]
        strength = ((opening - self._mouth_opening) / (cfg.mouth_open_ramp * width)).clamp(0, 1)
        if bool((strength > 0).any()):
            box = self._box(torch.cat([upper, lower], 1), margin=2.0 + cfg.feather)
            roi, xs, ys = self._crop(frames, box)
            roi[:] = paint_mouth(
                roi, xs, ys, upper, lower, strength, self._cavity, self._teeth,
                cfg.teeth_fraction, cfg.feather, cfg.corner_shade,
            )  # fmt: skip

    def _paint_eye(
        self, frames: torch.Tensor, target: torch.Tensor, upper: list[int], lower: list[int],
        skin: torch.Tensor,
    ) -> None:  # fmt: skip
        """Lid skin, in place, over the eye opening the target's lowered lid now covers."""
        cfg = self.config
        up_t, low_t = target[:, upper], target[:, lower]  # [B,V,2]
        # The portrait's open upper lid carried to the target eye by the similarity that maps the
        # portrait's eye corners onto the target's (complex numbers: z ↦ t0 + (z − s0)·k).
        src_up = torch.view_as_complex(self._source_t[upper].contiguous())  # [V]
        t_up = torch.view_as_complex(up_t.contiguous())  # [B,V]
        k = (t_up[:, -1] - t_up[:, 0]) / (src_up[-1] - src_up[0])  # [B]
        open_up = torch.view_as_real(t_up[:, :1] + (src_up[None] - src_up[0]) * k[:, None])
        eye_width = (up_t[:, -1] - up_t[:, 0]).norm(dim=-1)  # [B]
        open_height = (open_up - low_t).norm(dim=-1).amax(-1)
        height = (up_t - low_t).norm(dim=-1).amax(-1)
        strength = ((open_height - height) / (0.3 * open_height.clamp_min(1e-3))).clamp(0, 1)
        if bool((strength > 0).any()):
            grow = cfg.lid_grow * eye_width
            margin = 2.0 + cfg.feather + float(grow.max())
            roi, xs, ys = self._crop(frames, self._box(torch.cat([open_up, low_t], 1), margin))
            roi[:] = paint_eyelid(
                roi, xs, ys, open_up, up_t, low_t, strength, skin, skin * cfg.lash_darkness,
                (cfg.lash_width * eye_width).clamp_min(0.75), grow, cfg.feather, cfg.lid_shade,
            )  # fmt: skip

    def _box(self, points: torch.Tensor, margin: float) -> tuple[int, int, int, int]:
        """Integer pixel box (x0, y0, x1, y1) around points [B,V,2] of a whole chunk, clipped."""
        lo = (points.reshape(-1, 2).amin(0) - margin).floor().long().tolist()
        hi = (points.reshape(-1, 2).amax(0) + margin).ceil().long().tolist()
        x0, y0 = min(max(lo[0], 0), self.width), min(max(lo[1], 0), self.height)
        return x0, y0, max(min(hi[0], self.width), x0), max(min(hi[1], self.height), y0)

    def _crop(
        self, frames: torch.Tensor, box: tuple[int, int, int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A view [B,3,h,w] of one box of every frame and its pixel-centre columns [w], rows [h]."""
        x0, y0, x1, y1 = box
        # Landmarks are normalised coordinates × size, so pixel i's centre sits at i + 0.5.
        xs = torch.arange(x0, x1, device=frames.device, dtype=torch.float32) + 0.5
        ys = torch.arange(y0, y1, device=frames.device, dtype=torch.float32) + 0.5
        return frames[:, :, y0:y1, x0:x1], xs, ys
