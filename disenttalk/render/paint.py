"""Painting what a warp cannot show: the inside of a mouth, eyelid skin over a closing eye.

Both regions are openings between two contours that run corner to corner across the face (the
inner lips, the eyelids), so each is painted as the band between two curves y = top(x) and
y = bottom(x) sampled once per pixel column. Coverage is soft (a linear ramp over ``feather``
pixels), so edges are anti-aliased, and everything is batched over the frames of a chunk and
evaluated only on a small pixel box shared by the chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def curve_at(xs: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear y(x) of curves [B,V,2] at columns xs [w] or [B,w] (held flat past the
    ends), → [B,w]."""
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


@dataclass
class MouthColours:
    """Colours [3] (0..255) of the mouth interior, all taken from the photo (``WarpRenderer``)."""

    cavity: torch.Tensor  # the back of the mouth, in shadow
    lit: torch.Tensor  # the cavity walls just behind the lips, where light still reaches
    teeth: torch.Tensor  # enamel, lit
    gum: torch.Tensor
    tongue: torch.Tensor


@dataclass
class MouthShape:
    """Where the parts of the mouth are in one chunk of frames, all [B,w] over the box's columns
    (or [B] per frame): image rows of the curves, sizes in pixels."""

    top: torch.Tensor  # inner upper lip: everything above it is lip
    bottom: torch.Tensor  # inner lower lip
    corners: tuple[torch.Tensor, torch.Tensor]  # [B] x of the inner lip corners
    upper_edge: torch.Tensor  # the upper incisors' cutting edge (fixed to the head)
    lower_edge: torch.Tensor  # the lower incisors' cutting edge (carried by the jaw)
    upper_across: torch.Tensor  # position along the upper dental arch, −1..1 corner to corner
    lower_across: torch.Tensor  # the same for the lower arch
    width: torch.Tensor  # [B] the mouth's width at rest, at the frame's head scale


# Tooth boundaries along the visible arch, as seen from the front (fraction of the mouth's half
# width at rest from the midline): central incisor, lateral incisor, canine, premolars; the arch
# turns away from the viewer, so the teeth look narrower towards the corners. Lower incisors
# are narrower than upper ones.
UPPER_TEETH = (0.0, 0.30, 0.52, 0.70, 0.84, 0.95)
LOWER_TEETH = (0.0, 0.21, 0.43, 0.62, 0.78, 0.92)
TEETH_REACH = 0.95  # the arch leaves the view here (share of the half width)
LASH = 0.7  # opacity of the painted lash line over the photo's own lashes on a closed lid
RIM = 0.03  # the inner lip edge's darker rim, e-folding width (× mouth width); drawn to 3×


def _tooth_gaps(across: torch.Tensor, bounds: tuple[float, ...], half: torch.Tensor,
                width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(gap, along) [B,w]: how much a column lies on the dark seam between two teeth (0..1), and
    where it sits within its tooth (0 at the tooth's middle, 1 at its sides)."""
    b = torch.tensor(bounds, dtype=across.dtype, device=across.device)
    a = across.abs()[..., None]  # [B,w,1]
    dist = (a - b).abs()  # [B,w,K]
    near, k = dist.min(-1)
    gap = torch.exp(-((near * half[:, None]) / width) ** 2)  # seam width in pixels
    # within a tooth: distance to the nearest boundary over the tooth's half width
    spans = torch.diff(b, append=b[-1:] + (b[-1] - b[-2]))
    tooth_half = 0.5 * spans[k.clamp_max(len(bounds) - 1)]
    along = 1.0 - (near / tooth_half.clamp_min(1e-3)).clamp(0.0, 1.0)
    return gap, along


def paint_mouth(
    roi: torch.Tensor,  # [B,3,h,w] warped frames cropped to the mouth box
    xs: torch.Tensor,  # [w] pixel-centre columns of the box (image coordinates)
    ys: torch.Tensor,  # [h] pixel-centre rows of the box
    shape: MouthShape,
    colours: MouthColours,
    strength: torch.Tensor,  # [B] 0 = leave the warp alone, 1 = fully painted
    feather: float,
    corner_shade: float = 0.0,  # how much darker the inside gets towards the mouth corners
) -> torch.Tensor:
    """A mouth interior seen between the inner lips, back to front: a cavity dark at the back and
    lit near the lips, the tongue, the lower teeth, the upper teeth; then the lips' shadow on it
    and a darker inner lip edge. Every part is occluded by the lips (drawn only in the opening)."""
    y = ys[None, :, None]  # [1,h,1]
    alpha = band_coverage(xs, ys, shape.top, shape.bottom, shape.corners, feather) * strength[:, None, None]
    colour = _cavity(y, shape, colours)
    colour = _tongue(colour, y, shape, colours, feather)
    colour = _teeth(colour, y, shape, colours, feather)
    colour = colour * _lip_shadow(xs, y, shape, corner_shade)[:, None]
    out = blend(roi, colour, alpha)
    return out * (1.0 - 0.25 * _inner_rim(xs, y, shape, alpha, strength, feather)[:, None])


def _cavity(y: torch.Tensor, s: MouthShape, colours: MouthColours) -> torch.Tensor:
    """The cavity's colour [B,3,h,w]: dark at the back, lit just behind the lips."""
    top, bottom = s.top[:, None], s.bottom[:, None]  # [B,1,w]
    w = s.width[:, None, None]  # [B,1,1]
    gap = (bottom - top).clamp_min(1e-3)
    from_lips = torch.minimum(y - top, bottom - y).clamp_min(0.0)  # [B,h,w] pixels
    lit = torch.exp(-from_lips / (0.08 * w)) * (0.35 + 0.65 * (gap / (0.25 * w)).clamp(0, 1))
    return colours.cavity[:, None, None] + lit[:, None] * (colours.lit - colours.cavity)[:, None, None]


def _tongue(colour: torch.Tensor, y: torch.Tensor, s: MouthShape, colours: MouthColours,
            feather: float) -> torch.Tensor:
    """``colour`` with the tongue over it: a dome behind the lower teeth, seen when the jaw is
    well open."""
    w = s.width[:, None, None]  # [B,1,1]
    lower_edge, upper_edge = s.lower_edge[:, None], s.upper_edge[:, None]
    teeth_gap = (lower_edge - upper_edge).clamp_min(0.0)  # [B,1,w]
    la = s.lower_across[:, None]  # [B,1,w]
    dome = (1.0 - (la / 0.7) ** 2).clamp_min(0.0)
    tongue_top = lower_edge - 0.35 * teeth_gap * dome + 0.02 * w * (1.0 - dome)
    in_tongue = ramp(y - tongue_top, 1.5 * feather) * ramp(0.7 - la.abs(), 0.05)
    tongue_shade = 0.55 + 0.45 * torch.exp(-(y - tongue_top).clamp_min(0) / (0.06 * w))
    tongue = colours.tongue[:, None, None] * tongue_shade[:, None]
    return colour + in_tongue[:, None] * (tongue - colour)


def _teeth(colour: torch.Tensor, y: torch.Tensor, s: MouthShape, colours: MouthColours,
           feather: float) -> torch.Tensor:
    """``colour`` with the lower, then the upper teeth over it: rows of crowns with seams between
    them and scalloped cutting edges."""
    w = s.width[:, None, None]  # [B,1,1]
    half = 0.5 * s.width
    seam = (0.006 * s.width).clamp_min(0.35)[:, None]  # seam half width, pixels
    for edge, across, bounds, height, lower in (
        (s.lower_edge, s.lower_across, LOWER_TEETH, 0.17, True),
        (s.upper_edge, s.upper_across, UPPER_TEETH, 0.21, False),
    ):
        g, along = _tooth_gaps(across, bounds, half, seam)
        a = across.abs()
        # each crown's corners are rounded, so the cutting edge dips between teeth
        edge = edge + (-1.0 if lower else 1.0) * (-0.012 * s.width[:, None] * along**2)
        edge = edge[:, None]  # [B,1,w]
        root = edge + (1.0 if lower else -1.0) * height * w  # the gum line
        inside = (y - edge) if lower else (edge - y)  # > 0 on the crown side of the edge
        crown = ramp(inside, feather) * ramp(TEETH_REACH - a, 0.06)[:, None]
        on_gum = ramp((y - root) if lower else (root - y), feather) * crown
        # shading: the arch turns away into the mouth; a seam is a thin dark line; the edge
        # is a little translucent (a touch of the cavity colour)
        arch = (1.0 - 0.45 * a**2)[:, None]
        shade = arch * (1.0 - 0.2 * g[:, None]) * (0.88 if lower else 1.0)
        translucent = torch.exp(-inside.clamp_min(0) / (0.02 * w)) * 0.15
        enamel = colours.teeth[:, None, None] * (1 - translucent[:, None]) + (
            colours.cavity[:, None, None] * translucent[:, None])
        tooth = enamel + on_gum[:, None] * (colours.gum[:, None, None] - enamel)
        colour = colour + crown[:, None] * (tooth * shade[:, None] - colour)
    return colour


def _lip_shadow(xs: torch.Tensor, y: torch.Tensor, s: MouthShape, corner_shade: float) -> torch.Tensor:
    """The lips' shadow as a factor [B,h,w] on the interior: under the upper lip, into the corners."""
    w = s.width[:, None, None]  # [B,1,1]
    left, right = s.corners
    under_lip = 1.0 - 0.25 * torch.exp(-(y - s.top[:, None]).clamp_min(0) / (0.03 * w))
    mid, span = 0.5 * (left + right), (0.5 * (right - left)).clamp_min(1e-3)
    across = ((xs[None] - mid[:, None]) / span[:, None]).clamp(-1.0, 1.0)  # [B,w]
    sides = 1.0 - corner_shade * across[:, None] ** 2
    return under_lip * sides


def _inner_rim(xs: torch.Tensor, y: torch.Tensor, s: MouthShape, alpha: torch.Tensor,
               strength: torch.Tensor, feather: float) -> torch.Tensor:
    """The inner lip edge, where the lip rolls inwards: a thin darker rim on both lips, its
    weight [B,h,w] outside the opening (``alpha``)."""
    w = s.width[:, None, None]  # [B,1,1]
    left, right = s.corners
    rim_w = (RIM * w).clamp_min(0.75)

    def rim_of(d: torch.Tensor) -> torch.Tensor:  # d: pixels outside the opening
        return torch.exp(-d.clamp_min(0) / rim_w) * ramp(d + feather, feather) * (d < 3 * rim_w)

    rim = rim_of(s.top[:, None] - y) + rim_of(y - s.bottom[:, None])
    horizontal = ramp(xs[None] - left[:, None], feather) * ramp(right[:, None] - xs[None], feather)
    return rim.clamp_max(1.0) * (1.0 - alpha) * horizontal[:, None] * strength[:, None, None]


def paint_eyelid(
    roi: torch.Tensor,  # [B,3,h,w] warped frames cropped to the eye box
    xs: torch.Tensor,  # [w] pixel-centre columns of the box (image coordinates)
    ys: torch.Tensor,  # [h] pixel-centre rows
    open_upper: torch.Tensor,  # [B,V,2] the portrait's open upper lid carried to the target eye
    upper: torch.Tensor,  # [B,V,2] the target upper lid (the new lid edge)
    lower: torch.Tensor,  # [B,V,2] the target lower lid
    strength: torch.Tensor,  # [B] 0..1, how far the lid came down
    lid: torch.Tensor,  # [B,3,h,w] the photo's own lid skin drawn down over the eye
    band: torch.Tensor,  # [B] pixels of skin above the old lid edge that are drawn down with it
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
    # the skin above the old lid edge is drawn down too: fade it in over ``band`` pixels
    start = (open_top - g)[:, None]
    above = ((ys[None, :, None] - start + band[:, None, None]) / band[:, None, None].clamp_min(1.0))
    grown = ramp(xs[None] - left[:, None] + g, feather) * ramp(right[:, None] + g - xs[None], feather)
    above = above.clamp(0.0, 1.0) * (ys[None, :, None] < top[:, None]) * grown[:, None]
    covered = torch.maximum(covered, above * strength[:, None, None])
    on_lid = (1.0 - (ys[None, :, None] - top[:, None]).abs() / lash_width[:, None, None]).clamp(
        0, 1
    )
    along = ramp(xs[None] - left[:, None], feather) * ramp(right[:, None] - xs[None], feather)
    lash_alpha = on_lid * along[:, None]  # [B,h,w]
    # The lid curves away from the light as it comes down over the eyeball: shade it towards its edge.
    depth = ((ys[None, :, None] - open_top[:, None]) / (top - open_top)[:, None].clamp_min(1.0))
    shade = 1.0 - lid_shade * depth.clamp(0.0, 1.0)  # [B,h,w]
    roi = blend(roi, lid * shade[:, None], covered)
    # the photo's lashes come down with its lid; a soft dark line keeps the edge where they thin
    return blend(roi, lash[:, None, None], LASH * lash_alpha * strength[:, None, None])


def blend(roi: torch.Tensor, colour: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Alpha-composite colour ([B,3,h,w] or [3,1,1]) over a box [B,3,h,w] with coverage [B,h,w]."""
    a = alpha[:, None]
    return roi + a * (colour - roi)
