"""Painting what a warp cannot show: a mouth cavity with teeth, eyelid skin over a closing eye.

Both regions are openings between two contours that run corner to corner across the face (the
inner lips, the eyelids), so each is painted as the band between two curves y = top(x) and
y = bottom(x) sampled once per pixel column. Coverage is soft (a linear ramp over ``feather``
pixels), so edges are anti-aliased, and everything is batched over the frames of a chunk and
evaluated only on a small pixel box shared by the chunk.
"""

from __future__ import annotations

import torch

TEETH_REACH = 0.8  # the visible teeth end at this fraction of the way from the mouth centre to a corner


def curve_at(xs: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear y(x) of curves [B,V,2] at columns xs [w] (held flat past the ends), → [B,w]."""
    order = curve[..., 0].argsort(-1)  # a contour may bend back near a corner; sort by x
    cx = curve[..., 0].gather(-1, order).contiguous()  # [B,V]
    cy = curve[..., 1].gather(-1, order)
    x = xs.expand(curve.shape[0], -1).contiguous()  # [B,w]
    hi = torch.searchsorted(cx, x).clamp(1, cx.shape[-1] - 1)
    x0, x1 = cx.gather(-1, hi - 1), cx.gather(-1, hi)
    y0, y1 = cy.gather(-1, hi - 1), cy.gather(-1, hi)
    t = ((x - x0) / (x1 - x0).clamp_min(1e-6)).clamp(0.0, 1.0)
    return y0 + t * (y1 - y0)


def ramp(distance: torch.Tensor, feather: float) -> torch.Tensor:
    """Soft step: 0 outside, 1 inside, 0.5 on the edge; ``distance`` > 0 means inside."""
    return (0.5 + distance / feather).clamp(0.0, 1.0)


def band_coverage(
    xs: torch.Tensor,  # [w] pixel-centre columns
    ys: torch.Tensor,  # [h] pixel-centre rows
    top: torch.Tensor,  # [B,w] upper curve
    bottom: torch.Tensor,  # [B,w] lower curve
    ends: tuple[torch.Tensor, torch.Tensor],  # ([B], [B]) x of the left and right corners
    feather: float,
) -> torch.Tensor:
    """Soft coverage [B,h,w] of the region between two curves and between the corners."""
    y = ys[None, :, None]
    vertical = ramp(y - top[:, None], feather) * ramp(bottom[:, None] - y, feather)  # [B,h,w]
    left, right = ends
    horizontal = ramp(xs[None] - left[:, None], feather) * ramp(right[:, None] - xs[None], feather)
    return vertical * horizontal[:, None]  # [B,h,w]


def paint_mouth(
    roi: torch.Tensor,  # [B,3,h,w] warped frames cropped to the mouth box
    xs: torch.Tensor,  # [w] pixel-centre columns of the box (image coordinates)
    ys: torch.Tensor,  # [h] pixel-centre rows
    upper: torch.Tensor,  # [B,V,2] target inner upper lip, corner to corner
    lower: torch.Tensor,  # [B,V,2] target inner lower lip, same corners
    strength: torch.Tensor,  # [B] 0 = leave the warp alone, 1 = fully painted
    cavity: torch.Tensor,  # [3] colour of the dark mouth interior
    teeth: torch.Tensor,  # [3] colour of the upper teeth
    teeth_fraction: float,
    feather: float,
    corner_shade: float = 0.0,  # how much darker cavity and teeth get at the mouth corners
) -> torch.Tensor:
    """Dark cavity between the inner lips, a light band of upper teeth hanging from the upper lip."""
    top, bottom = curve_at(xs, upper), curve_at(xs, lower)  # [B,w]
    corners = (upper[:, 0, 0].minimum(upper[:, -1, 0]), upper[:, 0, 0].maximum(upper[:, -1, 0]))
    alpha = band_coverage(xs, ys, top, bottom, corners, feather) * strength[:, None, None]
    width = (upper[:, -1] - upper[:, 0]).norm(dim=-1)  # [B] mouth width
    gap = (bottom - top).clamp_min(0.0)  # [B,w] opening per column, 0 at the corners
    # The teeth never fill the opening (the dark cavity always shows below them) and narrow
    # into the corners with it.
    teeth_edge = top + torch.minimum(teeth_fraction * width[:, None], 0.5 * gap)  # [B,w]
    is_teeth = ramp(teeth_edge[:, None] - ys[None, :, None], feather)  # [B,h,w]
    # Shading: the cavity is darkest half way down, the teeth darken towards their edge.
    depth = ((ys[None, :, None] - top[:, None]) / gap[:, None].clamp_min(1e-3)).clamp(0.0, 1.0)
    shade_cavity = 0.5 + (2.0 * depth - 1.0).abs() * 0.5
    shade_teeth = 1.0 - 0.3 * (1.0 - (teeth_edge[:, None] - ys[None, :, None]).abs()).clamp(0, 1)
    # The lips shade the mouth's sides: darker towards the corners (a parabola across the mouth),
    # where the teeth end before the corners and the dark cavity shows beside them.
    mid, half = 0.5 * (corners[0] + corners[1]), (0.5 * (corners[1] - corners[0])).clamp_min(1e-3)
    across = ((xs[None] - mid[:, None]) / half[:, None]).clamp(-1.0, 1.0)  # [B,w]
    shade_side = (1.0 - corner_shade * across**2)[:, None, None]  # [B,1,1,w]
    is_teeth = is_teeth * ((TEETH_REACH - across.abs()) / 0.2).clamp(0.0, 1.0)[:, None]
    colour = shade_side * (
        is_teeth[:, None] * shade_teeth[:, None] * teeth[:, None, None]
        + (1.0 - is_teeth[:, None]) * shade_cavity[:, None] * cavity[:, None, None]
    )  # [B,3,h,w]
    return blend(roi, colour, alpha)


def paint_eyelid(
    roi: torch.Tensor,  # [B,3,h,w] warped frames cropped to the eye box
    xs: torch.Tensor,  # [w] pixel-centre columns of the box (image coordinates)
    ys: torch.Tensor,  # [h] pixel-centre rows
    open_upper: torch.Tensor,  # [B,V,2] the portrait's open upper lid carried to the target eye
    upper: torch.Tensor,  # [B,V,2] the target upper lid (the new lid edge)
    lower: torch.Tensor,  # [B,V,2] the target lower lid
    strength: torch.Tensor,  # [B] 0..1, how far the lid came down
    skin: torch.Tensor,  # [3] lid skin colour sampled from the portrait
    lash: torch.Tensor,  # [3] lash-line colour
    lash_width: torch.Tensor,  # [B] pixels
    grow: torch.Tensor,  # [B] pixels the skin reaches past the eye outline (lashes, lid rims)
    feather: float,
    lid_shade: float = 0.0,  # the lid darkens by this much from its old edge down to its new one
) -> torch.Tensor:
    """Eyelid skin over the part of the eye opening the lowered lid now covers, lash on its edge."""
    g = (grow * strength)[:, None]  # [B,1]: nothing grows while the lid has not moved
    open_top, top, bottom = curve_at(xs, open_upper), curve_at(xs, upper), curve_at(xs, lower)
    left, right = upper[:, 0, 0].minimum(upper[:, -1, 0]), upper[:, 0, 0].maximum(upper[:, -1, 0])
    # Covered = the portrait's opening (grown) minus the target's opening (shrunk).
    was_open = band_coverage(
        xs, ys, open_top - g, bottom + g, (left - g[:, 0], right + g[:, 0]), feather
    )
    still_open = band_coverage(
        xs, ys, top + g, bottom - g, (left + g[:, 0], right - g[:, 0]), feather
    )
    covered = (was_open - still_open).clamp(0.0, 1.0)  # [B,h,w]
    on_lid = (1.0 - (ys[None, :, None] - top[:, None]).abs() / lash_width[:, None, None]).clamp(
        0, 1
    )
    along = ramp(xs[None] - left[:, None], feather) * ramp(right[:, None] - xs[None], feather)
    lash_alpha = on_lid * along[:, None]  # [B,h,w]
    # The lid curves away from the light as it comes down over the eyeball: shade it towards its edge.
    depth = ((ys[None, :, None] - open_top[:, None]) / (top - open_top)[:, None].clamp_min(1.0))
    shade = 1.0 - lid_shade * depth.clamp(0.0, 1.0)  # [B,h,w]
    roi = blend(roi, skin[:, None, None] * shade[:, None], covered)
    return blend(roi, lash[:, None, None], lash_alpha * strength[:, None, None])


def blend(roi: torch.Tensor, colour: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Alpha-composite colour ([B,3,h,w] or [3,1,1]) over a box [B,3,h,w] with coverage [B,h,w]."""
    a = alpha[:, None]
    return roi + a * (colour - roi)
