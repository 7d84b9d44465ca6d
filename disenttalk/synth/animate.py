"""Truth motion of one clip: speech → mouth targets, blinks and head sway → landmarks [T,478,3].

Starting from the speaker portrait's tracked landmarks, the rest face has closed lips
(``close_lips``); per frame, the jaw drops by the coarticulated ``open`` target
(``open_mouth``), the lip corners move out for ``spread`` and in (with the lips pushed forward)
for ``round``, the lids close along the blink curve (``close_eyes``), and the whole face moves
by the head-sway similarity. Because every step is a deterministic function of the speech and
the seeded draws, the landmarks are the ground truth the rendered video is scored against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from disenttalk.face import topology as topo
from disenttalk.face.editors import close_eyes, close_lips, open_mouth
from disenttalk.face.measures import face_size, mouth_opening
from disenttalk.synth import motion, visemes
from disenttalk.synth.speakers import Speaker
from disenttalk.synth.speech import Speech

FPS = 25.0
JAW_DROP = 0.2  # jaw drop (× face size) at open = 1 for articulation 1
SPREAD_GAIN = 0.12  # relative mouth-width change at spread = 1
ROUND_GAIN = 0.22  # relative narrowing at round = 1
PROTRUSION = 0.08  # lips forward (× face size) at round = 1


@dataclass
class Truth:
    """Per-frame truth of a clip (T frames at ``fps``)."""

    landmarks: np.ndarray  # [T,478,3] float32 pixels
    mouth: np.ndarray  # [T,3] (open, spread, round) targets
    eye_closure: np.ndarray  # [T] 0 open … 1 shut
    head: np.ndarray  # [T,4] (roll, dx, dy, log-scale)
    blinks: np.ndarray  # [K,2] (start, end) s
    mouth_opening: np.ndarray  # [T] measures.mouth_opening of the landmarks
    fps: float = FPS


def lip_shape(landmarks: np.ndarray, spread: np.ndarray, rounding: np.ndarray) -> np.ndarray:
    """Widen (spread) or narrow and protrude (round) the mouth of landmarks [T,478,3] per frame."""
    lm = np.asarray(landmarks, dtype=np.float64)
    left, right = lm[:, topo.MOUTH_CORNERS[0]], lm[:, topo.MOUTH_CORNERS[1]]  # [T,3]
    centre = 0.5 * (left + right)
    axis = right - left
    half_width = 0.5 * np.linalg.norm(axis, axis=-1, keepdims=True)  # [T,1]
    axis = axis / (2.0 * half_width)
    rel = lm - centre[:, None]  # [T,478,3]
    x = (rel * axis[:, None]).sum(-1)  # along the mouth, [T,478]
    y = np.linalg.norm(rel - x[..., None] * axis[:, None], axis=-1)  # across it
    # Elliptical reach: the lips move fully, cheeks and chin follow with a smooth falloff.
    r = np.sqrt((x / half_width) ** 2 + (y / (0.6 * half_width)) ** 2)
    weight = np.exp(-0.5 * (np.maximum(r - 1.0, 0.0) / 0.5) ** 2)  # [T,478]
    stretch = SPREAD_GAIN * np.asarray(spread)[:, None] - ROUND_GAIN * np.asarray(rounding)[:, None]
    out = lm + (stretch * weight * x)[..., None] * axis[:, None]
    size = face_size(lm)[:, None]  # [T,1]
    # Smaller z is nearer the camera: rounding pushes the lips forward.
    out[..., 2] -= PROTRUSION * np.asarray(rounding)[:, None] * size * weight
    return out


def animate(
    speech: Speech, speaker: Speaker, portrait_landmarks: np.ndarray, num_frames: int,
    rng: np.random.Generator, fps: float = FPS,
) -> Truth:
    """Truth landmarks and curves of a clip of ``num_frames`` frames voicing ``speech``."""
    duration = num_frames / fps
    times = visemes.frame_times(num_frames, fps)  # [T]
    mouth = visemes.mouth_targets(speech.phonemes, times, duration)  # [T,3]
    blinks = motion.sample_blinks(duration, rng, speaker.blink_rate_hz)
    closure = motion.blink_closure(blinks, times, fps)  # [T]
    head = motion.head_sway(times, rng)  # [T,4]

    rest = close_lips(np.asarray(portrait_landmarks, dtype=np.float64), 1.0)  # [478,3]
    lm = np.broadcast_to(rest, (num_frames, *rest.shape))
    lm = open_mouth(lm, JAW_DROP * speaker.articulation * mouth[:, 0])
    lm = lip_shape(lm, mouth[:, 1], mouth[:, 2])
    for k in np.flatnonzero(closure > 0):
        lm[k] = close_eyes(lm[k], float(closure[k]))
    centre = rest[list(topo.FACE_OVAL), :2].mean(0)
    lm = motion.apply_similarity(lm, head, centre).astype(np.float32)
    return Truth(
        landmarks=lm, mouth=mouth.astype(np.float32), eye_closure=closure.astype(np.float32),
        head=head.astype(np.float32), blinks=blinks,
        mouth_opening=mouth_opening(lm).astype(np.float32), fps=fps,
    )
