"""Painting what a warp cannot show: a mouth cavity with teeth, eyelid skin over a closing eye.

Everything is batched over frames and evaluated on a small pixel box (region of interest) shared
by a chunk of frames. Polygons are rasterised as soft coverage from a signed distance, so edges
are anti-aliased and a polygon that does not move paints exactly what it painted before.
"""

from __future__ import annotations

import torch


def segment_distance(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from pixels [P,2] to segments a→b [B,E,2], → [B,P,E]."""
    ab = (b - a)[:, None]  # [B,1,E,2]
    ap = points[None, :, None] - a[:, None]  # [B,P,E,2]
    t = ((ap * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-8)).clamp(0.0, 1.0)
    return (ap - t[..., None] * ab).norm(dim=-1)


def polyline_distance(points: torch.Tensor, line: torch.Tensor) -> torch.Tensor:
    """Distance from pixels [P,2] to an open polyline [B,V,2], → [B,P]."""
    return segment_distance(points, line[:, :-1], line[:, 1:]).amin(-1)


def polygon_coverage(
    points: torch.Tensor, polygon: torch.Tensor, feather: float, grow: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Soft inside-ness of pixels [P,2] for closed polygons [B,V,2], in [0,1], → [B,P].

    Crossing-number test for the sign, distance to the nearest edge for the magnitude;
    the edge ramps linearly over ``feather`` pixels (0.5 on the outline moved out by ``grow``,
    a float or [B,1] pixels).
    """
    a, b = polygon, polygon.roll(-1, dims=1)  # edges a→b, [B,V,2]
    dist = segment_distance(points, a, b).amin(-1)  # [B,P]
    px, py = points[None, :, None, 0], points[None, :, None, 1]  # [1,P,1]
    ax, ay, bx, by = (c[:, None] for c in (a[..., 0], a[..., 1], b[..., 0], b[..., 1]))  # [B,1,V]
    straddles = (ay > py) != (by > py)
    x_cross = ax + (py - ay) * (bx - ax) / torch.where(by == ay, torch.ones_like(by), by - ay)
    inside = ((straddles & (px < x_cross)).sum(-1) % 2).bool()  # [B,P]
    signed = torch.where(inside, dist, -dist)
    return (0.5 + (signed + grow) / feather).clamp(0.0, 1.0)


def paint_mouth(
    roi: torch.Tensor,  # [B,3,h,w] float, warped frames cropped to the mouth box
    points: torch.Tensor,  # [h·w,2] pixel centres of the box, image coordinates
    upper: torch.Tensor,  # [B,V,2] target inner upper lip, corner to corner
    lower: torch.Tensor,  # [B,V,2] target inner lower lip, same corners
    strength: torch.Tensor,  # [B] 0 = leave the warp alone, 1 = fully painted
    cavity: torch.Tensor,  # [3] colour of the dark mouth interior
    teeth: torch.Tensor,  # [3] colour of the upper teeth
    teeth_fraction: float,
    feather: float,
) -> torch.Tensor:
    """Dark cavity inside the inner-lip polygon, a light band of upper teeth under the upper lip."""
    polygon = torch.cat([upper, lower.flip(1)], 1)  # [B,2V,2]
    alpha = polygon_coverage(points, polygon, feather) * strength[:, None]  # [B,P]
    axis = upper[:, -1] - upper[:, 0]  # [B,2] corner to corner
    width = axis.norm(dim=-1, keepdim=True)  # [B,1] mouth width
    down = torch.stack([-axis[:, 1], axis[:, 0]], -1) / width.clamp_min(1e-3)  # [B,2] ⟂ axis
    gap = (lower - upper).norm(dim=-1)  # [B,V] local opening, 0 at the corners
    # The teeth hang from the upper lip: a band that never fills the opening, so the dark
    # cavity always shows below it, and that narrows into the corners with the opening.
    band = torch.minimum(teeth_fraction * width, 0.5 * gap)  # [B,V]
    edge = upper + band[..., None] * down[:, None]  # [B,V,2] lower edge of the teeth
    teeth_polygon = torch.cat([upper, edge.flip(1)], 1)
    is_teeth = polygon_coverage(points, teeth_polygon, feather)  # [B,P]
    # Shading: the cavity darkens away from the lips, the teeth towards their lower edge.
    d_upper = polyline_distance(points, upper)  # [B,P]
    d_lower = polyline_distance(points, lower)
    depth = (d_lower / (d_upper + d_lower).clamp_min(1e-3)).clamp(0.0, 1.0)
    shade_cavity = 1.0 - 0.5 * (1.0 - (2.0 * depth - 1.0).abs())
    shade_teeth = 1.0 - 0.3 * (polyline_distance(points, edge) < 1.0).float()
    colour = (
        is_teeth[:, None] * teeth[None, :, None] * shade_teeth[:, None]
        + (1.0 - is_teeth[:, None]) * cavity[None, :, None] * shade_cavity[:, None]
    )  # [B,3,P]
    return blend(roi, colour, alpha)


def paint_eyelid(
    roi: torch.Tensor,  # [B,3,h,w] float, warped frames cropped to the eye box
    points: torch.Tensor,  # [h·w,2] pixel centres of the box, image coordinates
    open_polygon: torch.Tensor,  # [B,2V,2] the portrait's eye opening carried to the target eye
    target_polygon: torch.Tensor,  # [B,2V,2] the target eye opening (upper lid then lower lid)
    target_upper: torch.Tensor,  # [B,V,2] the target upper lid (the new lid edge)
    strength: torch.Tensor,  # [B] 0..1, how far the lid came down
    skin: torch.Tensor,  # [3] lid skin colour sampled from the portrait
    lash: torch.Tensor,  # [3] lash-line colour
    lash_width: torch.Tensor,  # [B] pixels
    grow: torch.Tensor,  # [B] pixels the covered area reaches past the lids (lash and lid rims)
    feather: float,
) -> torch.Tensor:
    """Eyelid skin over the part of the eye opening that the lowered lid now covers, lash on its edge."""
    grow = grow[:, None] * strength[:, None]  # [B,1] none at all while the lid has not moved
    covered = (
        polygon_coverage(points, open_polygon, feather, grow)
        - polygon_coverage(points, target_polygon, feather, -grow)
    ).clamp(0.0, 1.0)  # [B,P]
    d_lid = polyline_distance(points, target_upper)  # [B,P]
    lash_alpha = (1.0 - d_lid / lash_width[:, None]).clamp(0.0, 1.0)
    lash_alpha = lash_alpha * polygon_coverage(points, open_polygon, 2.0 * feather)
    roi = blend(roi, skin[None, :, None].expand(roi.shape[0], 3, points.shape[0]), covered)
    lash_colour = lash[None, :, None].expand(roi.shape[0], 3, points.shape[0])
    return blend(roi, lash_colour, lash_alpha * strength[:, None])


def blend(roi: torch.Tensor, colour: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Alpha-composite flat colours [B,3,P] over a box [B,3,h,w] with coverage [B,P]."""
    b, c, h, w = roi.shape
    a = alpha.view(b, 1, h, w)
    return roi * (1.0 - a) + colour.view(b, c, h, w) * a
