"""The colours a portrait lends its painted parts, read once per portrait as RGB floats 0..255:
the mouth interior (cavity, teeth, gums, tongue) from its lips, skin, eye whites and, where the
photo shows them, its own teeth; the lid skin of each eye.

``portrait`` is uint8 [H,W,3]; ``source`` its landmarks' x, y pixels [478,2].
"""

from __future__ import annotations

import numpy as np

from disenttalk.face import topology as topo
from disenttalk.render.config import RenderConfig

_INNER_UPPER, _INNER_LOWER = list(topo.LIPS_INNER_UPPER), list(topo.LIPS_INNER_LOWER)
# Cheeks, forehead and nose bridge: skin that is neither lips, eyes, brows nor (usually) beard.
_SKIN = (50, 280, 101, 330, 117, 346, 118, 347, 205, 425, 36, 266, 151, 9, 108, 337, 6, 197)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def sample(portrait: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Portrait colours [P,3] float at pixel positions [P,2] (nearest pixel, clipped)."""
    height, width = portrait.shape[:2]
    xy = np.clip(np.floor(points).astype(int), 0, [width - 1, height - 1])
    return portrait[xy[:, 1], xy[:, 0]].astype(np.float32)


def mouth_colours(portrait: np.ndarray, source: np.ndarray, mouth_width: float,
                  cfg: RenderConfig) -> tuple[np.ndarray, ...]:
    """(cavity, lit cavity, teeth, gum, tongue) RGB [3] float from the portrait's lips, skin
    and (where the photo shows them) its own teeth; the config's colours override.
    ``mouth_width``: the portrait's outer lip corners apart, pixels."""
    src = source
    # Lip colour: points half way between the outer and the inner lip contours.
    lips = np.concatenate([
        0.5 * (src[list(topo.LIPS_OUTER_UPPER)] + src[_INNER_UPPER]),
        0.5 * (src[list(topo.LIPS_OUTER_LOWER)] + src[_INNER_LOWER]),
    ])[1:-1]  # drop a corner point (shared by the contours)
    lip = np.median(sample(portrait, lips), 0)
    skin = sample(portrait, src[list(_SKIN)])
    luma = skin @ _LUMA
    tone = np.median(skin, 0)
    highlight = float(np.percentile(luma, 95))
    grey = float(tone @ _LUMA)
    # the skin's hue, mostly washed out, at the brightness of the skin's highlights
    hue = tone / max(grey, 1.0)
    teeth = highlight * cfg.teeth_brightness * (1.0 + cfg.teeth_saturation * (hue - 1.0))
    white = eye_white(portrait, source, grey)
    if white is not None:  # enamel: a little warmer and dimmer than the eyes' whites
        teeth = white * cfg.teeth_brightness * np.array([1.0, 0.97, 0.9], np.float32)
    own = own_teeth(portrait, source, mouth_width, highlight)
    if own is not None:
        teeth = own
    cavity, lit = lip * cfg.cavity_darkness, lip * cfg.cavity_lit
    gum = 0.8 * lip + 0.2 * tone  # gums: the lips' red, a little paler
    tongue = 0.65 * lip + 0.1 * tone
    if cfg.cavity_rgb is not None:  # the whole inside in the given colour's shades
        cavity = np.asarray(cfg.cavity_rgb, np.float32)
        lit = tongue = cavity * (cfg.cavity_lit / cfg.cavity_darkness)
    if cfg.teeth_rgb is not None:
        teeth = gum = np.asarray(cfg.teeth_rgb, np.float32)
    return tuple(np.clip(c, 0, 255) for c in (cavity, lit, teeth, gum, tongue))


def eye_white(portrait: np.ndarray, source: np.ndarray, skin_grey: float) -> np.ndarray | None:
    """The colour of the whites of the eyes (the photo's white balance and light on something
    white), or None where they are too dark or too small to read (squints, shadows)."""
    src = source
    samples = []
    for (iris, rim, *_), corners in ((topo.RIGHT_IRIS, (33, 133)), (topo.LEFT_IRIS, (362, 263))):
        radius = np.linalg.norm(src[rim] - src[iris])
        for c in corners:
            way = src[c] - src[iris]
            gap = np.linalg.norm(way)
            if gap < 1.6 * radius + 2.0:
                continue  # the iris fills the eye towards this corner
            for f in np.linspace(1.3 * radius / gap, 1.0 - 1.0 / gap, 4):
                samples.append(src[iris] + f * way)
    if len(samples) < 6:
        return None
    colours = sample(portrait, np.asarray(samples))
    white = np.median(colours[np.argsort(colours @ _LUMA)[len(colours) // 2:]], 0)
    saturation = (white.max() - white.min()) / max(float(white.max()), 1.0)
    # a white that is as bright as the skin and nearly grey; else the samples hit skin or iris
    return white if float(white @ _LUMA) > skin_grey and saturation < 0.3 else None


def own_teeth(portrait: np.ndarray, source: np.ndarray, mouth_width: float,
              highlight: float) -> np.ndarray | None:
    """The colour of the photo's own teeth where its mouth is open on them, else None."""
    upper, lower = source[_INNER_UPPER][2:-2], source[_INNER_LOWER][2:-2]  # away from the corners
    if float(np.linalg.norm(lower - upper, axis=-1).max()) < 0.06 * mouth_width:
        return None  # closed or barely parted: no teeth to see
    samples = np.concatenate([upper + f * (lower - upper) for f in np.linspace(0.15, 0.85, 8)])
    colours = sample(portrait, samples)
    bright = colours[np.argsort(colours @ _LUMA)[int(0.6 * len(colours)):]]
    teeth = np.median(bright, 0)
    # teeth are the mouth's bright part: a dark open mouth (no teeth shown) keeps the default
    return teeth if float(teeth @ _LUMA) > 0.6 * highlight else None


def lid_skin(portrait: np.ndarray, source: np.ndarray, upper: list[int], brow: list[int]) -> np.ndarray:
    """Median colour of the lid skin between the upper lid and the eyebrow, [3] float."""
    lid = source[upper]  # [V,2]
    lift = source[brow, 1].mean() - lid[:, 1].mean()  # negative: the brow is above
    samples = np.concatenate([lid + [0.0, f * lift] for f in (0.25, 0.35, 0.45)])
    colours = sample(portrait, samples)
    # Lashes, brow hairs and glasses frames are darker than the lid skin: leave out the
    # darkest 40 % of the samples before taking the median.
    keep = np.argsort(colours @ _LUMA)[int(0.4 * len(colours)):]
    return np.median(colours[keep], 0)
