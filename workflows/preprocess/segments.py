"""Where a source video is cut into training clips: shot cuts, spans without the face, a length cap.

A long talking-head video (an interview, a lecture: minutes long, sometimes edited) is not one
training clip. Preprocess reads it a chunk at a time and marks, for every frame at the model's
frame rate:

- **shot cuts**: :class:`CutDetector` scores the change between consecutive frames as the mean
  absolute difference of their hue, saturation and value on small thumbnails (0–255 scale, the
  content score PySceneDetect's ``ContentDetector`` uses; a cut scores far above the ~1–5 of a
  person talking in a still shot). :class:`Segmenter` adds the cuts that keep the colours but
  move the face: the followed face jumps or changes size from one frame with it to the next.
- **the face**: found or not (``valid``).

:class:`Segmenter` then keeps the spans between cuts, ends them where the face is missing for
longer than a gap, trims frames without the face off their ends, and cuts long spans into parts
no longer than the segment length; parts shorter than the minimum are dropped. It works as the
frames arrive and holds a bounded number of them, so a video of any length streams through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field

from disenttalk.config import StrictConfig
from disenttalk.face.tracker import centre_size

THUMB = 48  # rows of the thumbnails the cut score compares (columns follow the aspect ratio)


class SegmentConfig(StrictConfig):
    """How a source video becomes training clips (a long one: several)."""

    length_s: float = Field(10.0, gt=0)  # longest clip; longer spans are cut into equal parts
    max_face_gap_s: float = Field(0.5, ge=0)  # a longer run of frames without the face ends a clip
    cut_threshold: float = Field(27.0, gt=0)  # shot cut above this content score (0–255)
    chunk_frames: int = Field(50, ge=1)  # frames decoded and tracked at a time


def thumbnails(frames: np.ndarray) -> np.ndarray:
    """HSV thumbnails float32 [n,THUMB,w,3] in 0–255 of uint8 RGB frames [n,H,W,3]: block means
    over a grid (cheap at any resolution), then the colour space conversion."""
    from skimage.color import rgb2hsv

    n, h, w = frames.shape[:3]
    step = max(h // THUMB, 1)
    cols = max(w // step, 1)
    rows = min(h // step, THUMB)
    grid = frames[:, : rows * step, : cols * step].reshape(n, rows, step, cols, step, 3)
    small = grid.mean(axis=(2, 4), dtype=np.float32) / 255.0
    return (rgb2hsv(small) * 255.0).astype(np.float32)


class CutDetector:
    """Shot cuts in a video fed a chunk at a time: ``update(frames)`` → bool [n], True where a
    frame starts a new shot (never the video's first frame)."""

    def __init__(self, threshold: float = 27.0) -> None:
        self.threshold = threshold
        self._last: np.ndarray | None = None  # thumbnail of the previous chunk's last frame

    def scores(self, frames: np.ndarray) -> np.ndarray:
        """Content score float32 [n] of each frame against the one before it (0 for the first)."""
        thumbs = thumbnails(frames)
        prev = np.concatenate([thumbs[:1] if self._last is None else self._last[None], thumbs[:-1]])
        self._last = thumbs[-1]
        diff = np.abs(thumbs - prev)
        diff[..., 0] = np.minimum(diff[..., 0], 255.0 - diff[..., 0])  # hue wraps around
        return diff.mean(axis=(1, 2, 3))

    def update(self, frames: np.ndarray) -> np.ndarray:
        """Cuts bool [n] for the next frames of the video."""
        return self.scores(frames) > self.threshold


@dataclass
class Segment:
    """One clip to keep: frames ``start`` .. ``start + len(valid)`` of the source (at the model's
    frame rate), the followed face's landmarks [n,478,3] source pixels (NaN where missing), valid [n]."""

    start: int
    landmarks: np.ndarray
    valid: np.ndarray

    @property
    def stop(self) -> int:
        return self.start + len(self.valid)


class Segmenter:
    """Cuts a video into clips as its frames arrive (see the module doc): ``push`` the tracked
    frames of each chunk and the cuts found in it, get back the clips that are complete; ``finish``
    gives the rest. It holds at most ``2 × length_s`` (+ a face gap) of landmarks, whatever the
    video's length: a span that reaches twice the length gives up its first ``length_s``; when a
    span ends, what is left of it (≤ 2 × length) is cut into equal parts.

    A cut also comes from the face itself: the followed face's centre moves by more than half its
    size, or its size changes by more than half, from one frame with the face to the next.
    """

    def __init__(self, fps: float, cfg: SegmentConfig, min_s: float) -> None:
        self.max_gap = int(round(cfg.max_face_gap_s * fps))
        self.min_frames = max(int(np.ceil(min_s * fps - 1e-6)), 1)
        self.longest = max(int(round(cfg.length_s * fps)), self.min_frames)
        self.frame = 0  # index of the next frame pushed
        self.start = 0  # first frame of the open span
        self.lms: list[np.ndarray] = []  # the open span's frames, from its first frame with the face
        self.ok: list[bool] = []
        self.gap = 0  # frames without the face at the open span's end
        self.last: tuple[np.ndarray, float] | None = None  # centre, size of the last face seen
        self.cuts = 0  # shot cuts seen (pixels or face)

    def push(self, landmarks: np.ndarray, valid: np.ndarray, cuts: np.ndarray) -> list[Segment]:
        """The next frames: landmarks [n,478,3], valid [n], cuts [n] (True: a new shot starts)."""
        out: list[Segment] = []
        for pts, ok, cut in zip(landmarks, valid, cuts, strict=True):
            if ok:
                centre, size = centre_size(pts)
                if self.last is not None:
                    ratio = size / max(self.last[1], 1e-6)
                    moved = float(np.linalg.norm(centre - self.last[0])) > 0.5 * self.last[1]
                    cut = cut or moved or not (1 / 1.5 <= ratio <= 1.5)
                self.last = (centre, size)
            if cut and self.frame > 0:
                self.cuts += 1
                out += self._close()
            if ok:
                if not self.ok:
                    self.start = self.frame  # a span starts at its first frame with the face
                self.lms.append(pts)
                self.ok.append(True)
                self.gap = 0
            elif self.ok:
                self.lms.append(pts)
                self.ok.append(False)
                self.gap += 1
                if self.gap > self.max_gap:
                    out += self._close()
            self.frame += 1
            if len(self.ok) - self.gap >= 2 * self.longest:
                out.append(self._take(self.longest))
        return out

    def finish(self) -> list[Segment]:
        """The clips left when the video ends."""
        return self._close()

    def _take(self, n: int) -> Segment:
        seg = Segment(self.start, np.stack(self.lms[:n]), np.asarray(self.ok[:n], bool))
        del self.lms[:n], self.ok[:n]
        self.start += n
        return seg

    def _close(self) -> list[Segment]:
        """End the open span (without its trailing frames lacking the face): equal parts."""
        keep = len(self.ok) - self.gap
        out: list[Segment] = []
        if keep >= self.min_frames:
            parts = int(np.ceil(keep / self.longest))
            edges = np.linspace(0, keep, parts + 1).round().astype(int)
            out = [self._take(int(b - a)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
        self.lms, self.ok, self.gap = [], [], 0
        return [s for s in out if len(s.valid) >= self.min_frames]
