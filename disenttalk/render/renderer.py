"""``WarpRenderer``: landmarks → frames of one portrait (the stand-in for the paper's PIRenderer).

A frame is the portrait warped by a thin-plate spline through the landmark displacements
(a ring around the face and a lattice over the background beyond it stay still, so the
background does not move; motion under a fraction of a pixel is not drawn at all, so what does
not move stays the photo's own pixels), with each lip carried between its own contours, then
painted where a warp cannot show the target: the inside of the mouth (teeth on the skull and the
jaw, tongue, cavity) and a lowered eyelid (the photo's own lid drawn down). Painting reads the lip
and lid contours as curves over image columns, which holds for faces within a few tens of degrees
of upright.
Per frame the cost is one GEMM for the spline, small grid_samples for its inverse, the
upsampling and one grid_sample over the box where anything moves (the rest of the frame is the
photo, copied) and the painting of three small boxes, a lid only in frames where it is lowered;
everything else is set up once.

The renderer's settings are in :mod:`disenttalk.render.config`, the colours it reads from the
portrait in :mod:`disenttalk.render.colours`, the spline in :mod:`disenttalk.render.warp` and the
painting in :mod:`disenttalk.render.paint`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from disenttalk.face import topology as topo
from disenttalk.face.pose import RIGID
from disenttalk.render.colours import lid_skin, mouth_colours
from disenttalk.render.config import RenderConfig
from disenttalk.render.paint import (
    RIM,
    MouthColours,
    MouthShape,
    curve_at,
    paint_eyelid,
    paint_mouth,
)
from disenttalk.render.warp import ThinPlateField, still_anchors

__all__ = ["RenderConfig", "WarpRenderer"]

_INNER_UPPER, _INNER_LOWER = list(topo.LIPS_INNER_UPPER), list(topo.LIPS_INNER_LOWER)
_OUTER_UPPER, _OUTER_LOWER = list(topo.LIPS_OUTER_UPPER), list(topo.LIPS_OUTER_LOWER)
_RIGID = list(RIGID)  # skull points: upper face oval, nose bridge, eye corners
_EYES = (  # (upper lid, lower lid, eyebrow) per eye; lids share their corner points
    (list(topo.RIGHT_EYE_UPPER), list(topo.RIGHT_EYE_LOWER), list(topo.RIGHT_EYEBROW)),
    (list(topo.LEFT_EYE_UPPER), list(topo.LEFT_EYE_LOWER), list(topo.LEFT_EYEBROW)),
)


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
        self.portrait = portrait  # uint8 [H,W,3]: what a frame is where nothing moves
        # (a copy: the portrait may be a read-only view, e.g. of a Ray object)
        self.image = torch.tensor(portrait, dtype=torch.float32, device=self.device).permute(2, 0, 1)[None]
        self._source_t = src = torch.as_tensor(self.source, device=self.device)
        self._mouth_width = (src[_OUTER_UPPER[-1]] - src[_OUTER_UPPER[0]]).norm()  # at rest
        self._colours = MouthColours(*(
            torch.tensor(c, dtype=torch.float32, device=self.device)
            for c in mouth_colours(portrait, self.source, float(self._mouth_width), cfg)
        ))
        self._skin = [torch.tensor(lid_skin(portrait, self.source, up, br), device=self.device)
                      for up, _, br in _EYES]
        # how far each eye's brow sits above its upper lid, pixels
        self._brow_gap = {up[0]: float(self.source[up, 1].mean() - self.source[br, 1].mean())
                          for up, _, br in _EYES}
        self._mouth_opening = (src[_INNER_LOWER] - src[_INNER_UPPER]).norm(dim=-1).amax()
        # The teeth in the portrait: a closed mouth hides its incisal edges just below the lip
        # line, the lower one behind the lower lip.
        # A photo with parted lips (a smile) shows its upper teeth down to about three quarters
        # of the opening, the lower ones closed behind them.
        upper, lower = src[_INNER_UPPER], src[_INNER_LOWER]
        line = 0.5 * (upper + lower)  # [V,2] the lip line
        down = torch.tensor([0.0, 1.0], device=self.device)
        width = self._mouth_width
        shown = upper + 0.75 * (lower - upper)
        edge = line + cfg.teeth_drop * width * down
        self._upper_edge = torch.where(shown[:, 1:] > edge[:, 1:], shown, edge)
        closed_bite = self._upper_edge - cfg.overbite * width * down
        edge = line + cfg.lower_teeth_drop * width * down
        self._lower_edge = torch.where(closed_bite[:, 1:] > edge[:, 1:], closed_bite, edge)
        self._skull = torch.view_as_complex(src[_RIGID].contiguous())  # [R]
        self._skull_mean = self._skull.mean()
        self._skull_var = (self._skull - self._skull_mean).abs().square().sum()

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
                block = out[start : start + len(chunk)]
                frames, (x0, y0, x1, y1) = self.render_box(chunk)
                # what does not move is the photo's own pixels: around the box
                block[:, :y0], block[:, y1:] = self.portrait[:y0], self.portrait[y1:]
                block[:, y0:y1, :x0] = self.portrait[y0:y1, :x0]
                block[:, y0:y1, x1:] = self.portrait[y0:y1, x1:]
                # Bilinear sampling and alpha blending are convex, so frames stay within 0..255:
                # no clamp needed. The cast truncates, so +0.5 rounds to nearest. One casting
                # copy into the channels-last frames (faster than a float transpose, then a cast).
                torch.from_numpy(block[:, y0:y1, x0:x1]).copy_(frames.add_(0.5).permute(0, 2, 3, 1))
        return out[0] if single else out

    def render_tensor(self, target: torch.Tensor) -> torch.Tensor:
        """Batched core: target x, y [B,478,2] pixels → frames [B,3,H,W] float in 0..255."""
        frames, (x0, y0, x1, y1) = self.render_box(target)
        out = self.image.expand(target.shape[0], -1, -1, -1).clone()
        out[:, :, y0:y1, x0:x1] = frames
        return out

    def render_box(self, target: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """Target x, y [B,478,2] pixels → (frames [B,3,h,w] float 0..255 of the pixel box where
        anything moves or is painted, the box (x0, y0, x1, y1)); the rest is the portrait."""
        cfg = self.config
        side = max(self.height, self.width)
        back = self.field.backward_field(
            target - self._source_t, cfg.inverse_iterations,
            (cfg.still_below * side, cfg.moving_above * side),
        )
        box = self._union(self.field.moving_box(back), self._face_box(target))
        grid = self.field.sampling_grid(back, box)
        self._carry_lips(grid, target, box)
        image = self.image.expand(target.shape[0], -1, -1, -1)
        frames = F.grid_sample(
            image, grid, mode=cfg.sampling, padding_mode="border", align_corners=True
        )
        if cfg.sampling == "bicubic":  # bicubic overshoots at edges; keep the photo's range
            frames = frames.clamp_(0.0, 255.0)
        self._paint_mouth(frames, target, box)
        for (upper, lower, _), skin in zip(_EYES, self._skin, strict=True):
            self._paint_eye(frames, target, upper, lower, skin, box)
        return frames, box

    def _face_box(self, target: torch.Tensor) -> tuple[int, int, int, int]:
        """A box around the face of every frame with room for everything painted beside it (the
        lip, mouth and lid boxes reach past their contours by a fraction of the mouth or eye)."""
        lo, hi = target.reshape(-1, 2).amin(0), target.reshape(-1, 2).amax(0)
        return self._box(target, 4.0 + self.config.feather + 0.15 * float((hi - lo).max()))

    @staticmethod
    def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        if a[2] <= a[0] or a[3] <= a[1]:
            return b
        return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])

    def _carry_lips(self, grid: torch.Tensor, target: torch.Tensor,
                    origin: tuple[int, ...]) -> None:
        """In place: each lip's band between its outer and inner contour reads the photo's own
        band (rows mapped linearly per column, columns by their share of the mouth width), so the
        vermilion is carried whole instead of stretched where the spline cannot split the lips."""
        cfg, src = self.config, self._source_t
        curves = [target[:, c] for c in (_OUTER_UPPER, _INNER_UPPER, _INNER_LOWER, _OUTER_LOWER)]
        left, right = curves[0][:, 0], curves[0][:, -1]  # [B,2] outer corners
        span = (right[:, 0] - left[:, 0]).clamp_min(1.0)  # [B]
        margin = cfg.lip_blend * (right - left).norm(dim=-1).clamp_min(1.0)  # [B]
        box = self._box(torch.cat([curves[0], curves[3]], 1), float(margin.max()) + 2.0)
        if box[2] <= box[0] or box[3] <= box[1]:
            return
        roi, xs, ys = self._crop(grid.permute(0, 3, 1, 2), box, origin)  # [B,2,h,w] view
        s_left, s_right = src[_OUTER_UPPER[0]], src[_OUTER_UPPER[-1]]
        share = (xs[None] - left[:, :1]) / span[:, None]  # [B,w]
        x_src = s_left[0] + share * (s_right[0] - s_left[0])  # [B,w]
        scale = ((s_right - s_left).norm() / (right - left).norm(dim=-1).clamp_min(1.0))[:, None]
        b = target.shape[0]
        t_mid = [curve_at(xs, c) for c in curves]  # [B,w] each
        s_mid = [curve_at(x_src, src[c].expand(b, -1, -1))
                 for c in (_OUTER_UPPER, _INNER_UPPER, _INNER_LOWER, _OUTER_LOWER)]
        m = margin[:, None]
        knots_t = torch.stack([t_mid[0] - m, *t_mid, t_mid[3] + m], 1).cummax(1).values
        knots_s = torch.stack([s_mid[0] - m * scale, *s_mid, s_mid[3] + m * scale], 1)
        knots_s = knots_s.cummax(1).values  # [B,6,w]
        y = ys[None, :, None].expand(b, -1, xs.shape[0])  # [B,h,w]
        y_src = y - knots_t[:, :1] + knots_s[:, :1]
        for k in range(knots_t.shape[1] - 1):
            t0, t1 = knots_t[:, k : k + 1], knots_t[:, k + 1 : k + 2]
            s0, s1 = knots_s[:, k : k + 1], knots_s[:, k + 1 : k + 2]
            f = ((y - t0) / (t1 - t0).clamp_min(1e-3)).clamp(0.0, 1.0)
            y_src = torch.where(y >= t0, s0 + f * (s1 - s0), y_src)
        # weight: 1 on the lips, down to 0 over the margin above, below and beyond the corners
        vertical = torch.minimum(y - knots_t[:, :1], knots_t[:, -1:] - y) / m[:, None]
        horizontal = torch.minimum(xs[None] - left[:, :1] + m, right[:, :1] + m - xs[None]) / m
        weight = (vertical.clamp(0, 1) * horizontal.clamp(0, 1)[:, None])[:, None]  # [B,1,h,w]
        to_norm = self.field.to_norm
        carried = torch.stack([
            (x_src[:, None].expand_as(y_src) - 0.5) * to_norm[0] - 1.0,
            (y_src - 0.5) * to_norm[1] - 1.0,
        ], 1)  # [B,2,h,w]
        roi += weight * (carried - roi)

    def _paint_mouth(self, frames: torch.Tensor, target: torch.Tensor,
                     origin: tuple[int, ...]) -> None:
        """The mouth interior, in place, where the target mouth opens or closes from the portrait's."""
        cfg = self.config
        upper, lower = target[:, _INNER_UPPER], target[:, _INNER_LOWER]  # [B,V,2]
        width = (upper[:, -1] - upper[:, 0]).norm(dim=-1)  # [B]
        opening = (lower - upper).norm(dim=-1).amax(-1)  # [B]
        # Painted once the opening differs from the photo's: a closed mouth opening, or an open
        # one (a smile with teeth) closing, where squeezing the photo's own teeth would look wrong.
        change = (opening - self._mouth_opening).abs()
        strength = (change / (cfg.mouth_open_ramp * width)).clamp(0, 1)
        if not bool((strength > 0).any()):
            return
        rim = 3.0 * max(RIM * float(width.max()), 0.75)  # the inner lip rim, outside the opening
        box = self._box(torch.cat([upper, lower], 1), margin=2.0 + cfg.feather + rim)
        roi, xs, ys = self._crop(frames, box, origin)
        # The skull's similarity from the portrait to each frame (least squares on rigid points,
        # as complex numbers z ↦ a·z + b) carries the upper teeth; the jaw carries the lower ones
        # by the chin's travel beyond what the skull's motion explains.
        skull = torch.view_as_complex(target[:, _RIGID].contiguous())  # [B,R]
        t_mean = skull.mean(-1, keepdim=True)
        a = ((skull - t_mean) * (self._skull - self._skull_mean).conj()).sum(-1, keepdim=True)
        a = a / self._skull_var
        b = t_mean - a * self._skull_mean  # [B,1]

        def carry(points: torch.Tensor) -> torch.Tensor:  # [...,2] portrait → [B,...,2] frame
            return torch.view_as_real(a * torch.view_as_complex(points.contiguous()) + b)

        src = self._source_t
        chin = target[:, topo.CHIN] - carry(src[topo.CHIN])[:, 0]  # [B,2]
        upper_edge = carry(self._upper_edge)  # [B,V,2]
        # the jaw's drop: its share of the chin's travel, or of the lower lip's where the lip
        # drops further than the chin explains (the landmarks' chin lags the lips)
        lip = (lower[:, 3:-3] - carry(src[_INNER_LOWER[3:-3]])).mean(1)  # [B,2]
        drop = torch.maximum(cfg.jaw_to_teeth * chin[:, 1], cfg.lip_to_teeth * lip[:, 1])
        jaw = torch.stack([cfg.jaw_to_teeth * chin[:, 0], drop], -1)  # [B,2]
        lower_edge = carry(self._lower_edge) + jaw[:, None]
        # the lower teeth cannot rise past the closed bite, just behind the upper ones
        bite = upper_edge[..., 1] - cfg.overbite * a[:, :1].abs() * self._mouth_width
        lower_edge = torch.stack([lower_edge[..., 0], lower_edge[..., 1].maximum(bite)], -1)
        rest_width = a[:, 0].abs() * self._mouth_width  # [B]
        centre = 0.5 * (carry(src[_OUTER_UPPER[0]]) + carry(src[_OUTER_UPPER[-1]]))[:, 0]  # [B,2]
        upper_across = (xs[None] - centre[:, :1]) / (0.5 * rest_width[:, None])
        lower_across = (xs[None] - centre[:, :1] - jaw[:, :1]) / (
            0.5 * rest_width[:, None])
        corners = (upper[:, 0, 0].minimum(upper[:, -1, 0]), upper[:, 0, 0].maximum(upper[:, -1, 0]))
        shape = MouthShape(
            top=curve_at(xs, upper), bottom=curve_at(xs, lower), corners=corners,
            upper_edge=curve_at(xs, upper_edge), lower_edge=curve_at(xs, lower_edge),
            upper_across=upper_across, lower_across=lower_across, width=rest_width,
        )
        roi[:] = paint_mouth(roi, xs, ys, shape, self._colours, strength, cfg.feather,
                             cfg.corner_shade)

    def _paint_eye(
        self, frames: torch.Tensor, target: torch.Tensor, upper: list[int], lower: list[int],
        skin: torch.Tensor, origin: tuple[int, ...],
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
        shut = strength > 0
        if not bool(shut.any()):
            return
        # a blink lowers the lid in a few frames of a chunk: only those are painted
        some = None if bool(shut.all()) else shut.nonzero()[:, 0]
        if some is not None:
            strength, eye_width, k = strength[some], eye_width[some], k[some]
            up_t, low_t, open_up, t_up = up_t[some], low_t[some], open_up[some], t_up[some]
        grow = cfg.lid_grow * eye_width
        margin = 2.0 + cfg.feather + float(grow.max()) + cfg.lid_band * float(eye_width.max())
        box = self._box(torch.cat([open_up, low_t], 1), margin)
        roi, xs, ys = self._crop(frames, box, origin)
        # The lid is the photo's own lid drawn down: the band of skin above its old edge is
        # stretched from there to the new edge, the photo's lash line landing on the new edge,
        # so the lashes and the lid's own skin texture come down with it.
        band = cfg.lid_band * eye_width  # [B]
        brow_gap = max(self._brow_gap[upper[0]], 1.0)
        old, new = curve_at(xs, open_up), curve_at(xs, up_t)  # [B,w]
        start = (old - (grow * strength)[:, None] - band[:, None])[:, None]  # [B,1,w]
        # two pieces: the lid skin (the photo's skin between its lashes and its brow, stretched
        # over the covered eye) and the lash line (the last ``lash`` pixels, not stretched)
        lash_width = (cfg.lash_width * eye_width).clamp_min(0.75)  # [B]
        lash = lash_width[:, None, None]
        skin_from, skin_to = (old[:, None] - f * brow_gap * k.abs()[:, None, None]
                              for f in (0.45, 0.2))
        y = ys[None, :, None]
        knot = new[:, None] - lash  # [B,1,w]
        skin_f = ((y - start) / (knot - start).clamp_min(1e-3)).clamp(0, 1)
        y_src = torch.where(y < knot, skin_from + skin_f * (skin_to - skin_from),
                            y - new[:, None] + old[:, None])
        y_src = torch.where(y > knot + 0.5 * lash, skin_to, y_src)  # below the lashes: lid skin
        carried = torch.complex(xs[None, None].expand_as(y_src), y_src)
        at = torch.view_as_real(src_up[0] + (carried - t_up[:, :1, None]) / k[:, None, None])
        grid = (at - 0.5) * self.field.to_norm - 1.0  # [B,h,w,2]
        lid = F.grid_sample(self.image.expand(len(k), -1, -1, -1), grid, mode="bilinear",
                            padding_mode="border", align_corners=True)
        painted = paint_eyelid(
            roi if some is None else roi[some], xs, ys, open_up, up_t, low_t, strength, lid,
            band, skin * cfg.lash_darkness, lash_width, grow, cfg.feather, cfg.lid_shade,
        )  # fmt: skip
        if some is None:
            roi[:] = painted
        else:
            roi[some] = painted  # (copies of the eye box only)

    def _box(self, points: torch.Tensor, margin: float) -> tuple[int, int, int, int]:
        """Integer pixel box (x0, y0, x1, y1) around points [B,V,2] of a whole chunk, clipped."""
        lo = (points.reshape(-1, 2).amin(0) - margin).floor().long().tolist()
        hi = (points.reshape(-1, 2).amax(0) + margin).ceil().long().tolist()
        x0, y0 = min(max(lo[0], 0), self.width), min(max(lo[1], 0), self.height)
        return x0, y0, max(min(hi[0], self.width), x0), max(min(hi[1], self.height), y0)

    def _crop(
        self, frames: torch.Tensor, box: tuple[int, int, int, int], origin: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A view [B,C,h,w] of one box of every frame and its pixel-centre columns [w], rows [h];
        ``frames`` [B,C,H',W'] hold the pixels from ``origin`` (x, y) on (the box is kept in them)."""
        ox, oy = origin[:2]
        x0, y0 = max(box[0], ox), max(box[1], oy)
        x1, y1 = max(min(box[2], ox + frames.shape[-1]), x0), max(min(box[3], oy + frames.shape[-2]), y0)
        # Landmarks are normalised coordinates × size, so pixel i's centre sits at i + 0.5.
        xs = torch.arange(x0, x1, device=frames.device, dtype=torch.float32) + 0.5
        ys = torch.arange(y0, y1, device=frames.device, dtype=torch.float32) + 0.5
        return frames[:, :, y0 - oy : y1 - oy, x0 - ox : x1 - ox], xs, ys
