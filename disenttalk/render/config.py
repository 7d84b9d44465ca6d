"""Settings of the warp renderer (:class:`RenderConfig`)."""

from __future__ import annotations

from typing import Literal

from disenttalk.config import StrictConfig


class RenderConfig(StrictConfig):
    """Settings of the warp renderer (sizes in pixels unless said otherwise)."""

    grid_size: int = 64  # coarse grid the spline is evaluated on before upsampling
    regularization: float = 1e-5  # TPS smoothing; keeps nearby conflicting points from folding
    inverse_iterations: int = 4  # fixed-point steps inverting the forward field
    anchor_ring_scale: float = 1.6  # still ring = face oval scaled about its centre
    anchor_lattice: int = 16  # still background points per side beyond the ring
    chunk_frames: int = 32  # frames rendered per batched call
    # how the warp reads the photo: "bicubic" keeps more of a large photo's fine detail where
    # it moves, at about twice the cost of "bilinear"
    sampling: Literal["bilinear", "bicubic"] = "bilinear"
    feather: float = 1.0  # anti-aliasing ramp of painted edges
    # Only what moves is drawn anew: where the warp moves the image by less than
    # ``still_below`` of the portrait's side it does not move it at all (the photo's own pixels,
    # bit for bit), above ``moving_above`` it moves it fully, ramped between; so fine detail
    # and the background stay the photo's own (0.001 is a quarter pixel at 256 px).
    still_below: float = 0.002
    moving_above: float = 0.005
    # The lips are carried between their outer and inner contours (a band per lip mapped onto
    # the photo's own band) instead of stretched by the spline; the band reaches this far
    # (× mouth width) beyond the outer contours to blend into the spline.
    lip_blend: float = 0.12
    mouth_open_ramp: float = 0.06  # opening change (× mouth width) that fully paints the interior
    # The mouth interior (upper teeth fixed to the skull, lower teeth carried by the jaw, tongue,
    # cavity) takes its colours from the portrait itself, so grey, dim or low-contrast photos get
    # a mouth in their own tones: the cavity is its lip colour darkened, the teeth are its own
    # teeth where the photo shows them, else its skin tone desaturated at the brightness of its
    # skin highlights. A colour given here overrides that.
    cavity_rgb: tuple[int, int, int] | None = None
    teeth_rgb: tuple[int, int, int] | None = None
    cavity_darkness: float = 0.16  # the back of the cavity = lip colour × this
    cavity_lit: float = 0.5  # the cavity just behind the lips = lip colour × this
    teeth_brightness: float = 0.92  # teeth luminance = skin highlight luminance × this
    teeth_saturation: float = 0.3  # share of the skin's hue kept in the teeth (0 = grey)
    teeth_drop: float = 0.05  # upper incisal edge below the photo's lip line (× mouth width)
    lower_teeth_drop: float = 0.07  # lower incisal edge below the lip line at rest (× width)
    overbite: float = 0.03  # a closed bite's lower incisal edge above the upper one (× width)
    jaw_to_teeth: float = 0.85  # share of the chin's travel the lower incisors follow
    lip_to_teeth: float = 0.75  # ... or of the lower lip's drop, whichever is more
    corner_shade: float = 0.35  # the interior darkens by this much into the mouth corners
    lash_darkness: float = 0.35  # lash colour = skin colour × this
    lash_width: float = 0.07  # lash-line half width (× eye width)
    lid_grow: float = 0.06  # painted lid skin reaches this far past the eye outline (× eye width)
    lid_shade: float = 0.15  # a closed lid darkens by this share from its crease side to its edge
    lid_band: float = 0.12  # skin above the lid edge drawn down with a closing lid (× eye width)
