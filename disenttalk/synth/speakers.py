"""Synthetic speaker identities: a voice (rate, pitch) and a portrait varied from one base photo.

Each speaker's portrait is the base image cropped to a 256×256 face-centred square with its own
small similarity jitter (scale, roll, shift) and colour change (hue, saturation, brightness), so
a corpus made from one photo still has several distinct faces; each speaker also has their own
speaking rate, pitch, articulation (how wide the mouth opens) and blink rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from disenttalk.face import topology as topo

PORTRAIT_SIZE = 256
FACE_FRACTION = 0.5  # face-oval height as a share of the crop side


@dataclass(frozen=True)
class Speaker:
    """One synthetic identity: voice, articulation, blinking and portrait variation."""

    speaker_id: str
    rate_wpm: int  # espeak-ng words per minute
    pitch: int  # espeak-ng base pitch 0–99
    pitch_range: int  # espeak-ng intonation range 0–99
    articulation: float  # gain on the jaw opening
    blink_rate_hz: float
    scale: float  # face size relative to the standard crop
    roll_deg: float
    shift_px: tuple[float, float]
    hue: float  # hue rotation, fraction of the colour circle
    saturation: float  # saturation gain
    brightness: float  # value gain

    def to_dict(self) -> dict:
        """JSON-compatible dict."""
        return asdict(self)


def make_speakers(count: int, seed: int) -> list[Speaker]:
    """``count`` distinct speakers drawn from ``seed`` (ids ``spk00``, ``spk01``, ...)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5BEA]))
    out = []
    for k in range(count):
        out.append(Speaker(
            speaker_id=f"spk{k:02d}",
            rate_wpm=int(rng.integers(140, 186)),
            pitch=int(rng.integers(25, 76)),
            pitch_range=int(rng.integers(35, 76)),
            articulation=float(round(rng.uniform(0.8, 1.2), 4)),
            blink_rate_hz=float(round(rng.uniform(0.22, 0.38), 4)),
            scale=float(round(rng.uniform(0.93, 1.07), 4)),
            roll_deg=float(round(rng.uniform(-4.0, 4.0), 4)),
            shift_px=(float(round(rng.uniform(-8, 8), 3)), float(round(rng.uniform(-6, 6), 3))),
            hue=float(round(rng.uniform(-0.035, 0.035), 4)),
            saturation=float(round(rng.uniform(0.75, 1.2), 4)),
            brightness=float(round(rng.uniform(0.85, 1.1), 4)),
        ))
    return out


def _crop_transform(face: np.ndarray, speaker: Speaker | None, size: int):
    """Similarity mapping crop pixels → source pixels, centred on the face oval's box."""
    from skimage.transform import SimilarityTransform

    oval = face[list(topo.FACE_OVAL), :2]
    centre = 0.5 * (oval.min(0) + oval.max(0))
    side = (oval[:, 1].max() - oval[:, 1].min()) / FACE_FRACTION  # source pixels per crop side
    scale, roll, shift = 1.0, 0.0, np.zeros(2)
    if speaker is not None:
        scale, roll, shift = speaker.scale, np.deg2rad(speaker.roll_deg), np.asarray(speaker.shift_px)
    # crop → centred unit square → rotated/scaled → source
    to_centre = SimilarityTransform(translation=(-size / 2, -size / 2))
    jitter = SimilarityTransform(scale=side / (size * scale), rotation=roll)
    back = SimilarityTransform(translation=centre - shift * side / size)
    return to_centre + jitter + back


def crop_speaker_face(
    image: np.ndarray, face: np.ndarray, speaker: Speaker | None = None, size: int = PORTRAIT_SIZE
) -> np.ndarray:
    """Face-centred ``size``² uint8 crop of ``image`` given its landmarks ``face`` [478,3] (pixels)."""
    from skimage.transform import warp

    tform = _crop_transform(face, speaker, size)
    out = warp(image, tform, output_shape=(size, size), order=1, mode="edge", preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def recolour(image: np.ndarray, speaker: Speaker) -> np.ndarray:
    """Shift hue, scale saturation and brightness of a uint8 RGB image."""
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(image)
    hsv[..., 0] = (hsv[..., 0] + speaker.hue) % 1.0
    hsv[..., 1] = np.clip(hsv[..., 1] * speaker.saturation, 0.0, 1.0)
    hsv[..., 2] = np.clip(hsv[..., 2] * speaker.brightness, 0.0, 1.0)
    return np.clip(np.round(hsv2rgb(hsv) * 255.0), 0, 255).astype(np.uint8)


def speaker_portrait(image: np.ndarray, face: np.ndarray, speaker: Speaker) -> np.ndarray:
    """The speaker's 256×256 portrait from a base photo ``image`` with landmarks ``face``."""
    return recolour(crop_speaker_face(image, face, speaker), speaker)


def base_portrait(path: str | None = None) -> np.ndarray:
    """The user's portrait (any image file) or scikit-image's astronaut, uint8 [H,W,3] RGB."""
    if path is None:
        from skimage import data

        return data.astronaut()
    from disenttalk.media import read_image

    return read_image(path)
