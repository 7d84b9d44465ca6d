"""Windowed generation of any length, offline and streamed, through one code path.

Window i makes the ``hop`` new frames [i·H, (i+1)·H). Before them it carries a prefix: the last
``prefix`` frames already generated, given to the denoiser as known values on every dim, so it
continues the motion instead of starting over (no seam). After them it runs ``look_ahead`` extra
frames so the last kept frames see as much future audio as the network allows; those are
generated and dropped (the network is causal, so they never change the frames kept).

Audio features for a window come from an audio slice reaching ``context`` frames before the
window and ``margin`` frames past it, so the frontend's own borders (STFT padding) stay outside
the frames used. Offline generation is one ``push`` of the whole audio and a ``flush``; a stream
pushes chunks. Both cut the same slices and seed window i's noise from (seed, i), so a stream
yields exactly the offline motion (same numbers, not just close), with a latency of one hop
plus ``look_ahead + margin`` frames plus compute. ``first_hop`` (shorter than ``hop``) makes the
first window's new frames fewer, so a stream shows its first frame sooner and then runs at the
cheaper long hop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from disenttalk.generate.motion import Motion

if TYPE_CHECKING:
    from disenttalk.generate.generator import Generator, Settings


@dataclass(frozen=True)
class WindowPlan:
    """Frame bookkeeping of window i (all in video frames at ``fps``)."""

    hop: int
    prefix: int
    look_ahead: int
    context: int
    margin: int
    first_hop: int | None = None  # new frames of window 0 (None: hop)

    def __post_init__(self) -> None:
        if self.hop < 1 or min(self.prefix, self.look_ahead, self.context, self.margin) < 0:
            raise ValueError(f"invalid window plan {self}")
        if self.first_hop is not None and not 1 <= self.first_hop <= self.hop:
            raise ValueError(f"first_hop must be in 1..hop, got {self.first_hop}")

    @property
    def first(self) -> int:
        """New frames of window 0."""
        return self.hop if self.first_hop is None else self.first_hop

    def frames(self, i: int, total: int | None = None) -> tuple[int, int, int, int]:
        """(first prefix frame, first new frame, end of new frames, end of generated frames)."""
        first = self.first
        new_start = 0 if i == 0 else first + (i - 1) * self.hop
        new_end = first + i * self.hop
        gen_end = new_end + self.look_ahead
        if total is not None:
            new_end, gen_end = min(new_end, total), min(gen_end, total)
        return max(0, new_start - self.prefix), new_start, new_end, gen_end

    def audio_frames(self, i: int, total: int | None = None) -> tuple[int, int]:
        """Frames [a0, a1) of audio the features of window i are computed from."""
        span_start, _, _, gen_end = self.frames(i, total)
        a1 = gen_end + self.margin
        return max(0, span_start - self.context), a1 if total is None else min(a1, total)


class MotionStream:
    """Incremental generation state: audio buffer, previous window's tail, window index.

    ``push(chunk)`` returns the Motion chunks that became ready; ``flush()`` ends the audio and
    returns the rest. Chunks are consecutive (``Motion.start``) and ``Motion.concat`` joins them.
    """

    def __init__(self, generator: Generator, sample_rate: int, settings: Settings) -> None:
        self.gen, self.sample_rate, self.settings = generator, int(sample_rate), settings
        self.plan: WindowPlan = generator.plan
        self.fps = generator.fps
        self._audio = np.zeros(0, dtype=np.float32)
        self._offset = 0  # absolute index of self._audio[0], in samples
        self._index = 0  # next window
        self._tail: torch.Tensor | None = None  # last ≤ prefix generated frames, normalised [P,N]
        self._done = False
        self.whole: torch.Tensor | None = None  # features of the whole audio [T,F], when known

    def _sample(self, frame: int) -> int:
        return round(frame * self.sample_rate / self.fps)

    @property
    def received(self) -> int:
        """Samples pushed so far."""
        return self._offset + len(self._audio)

    def push(self, chunk: np.ndarray) -> list[Motion]:
        """Add mono float audio samples; return the windows now complete."""
        self.add(chunk)
        return list(self.ready())

    def flush(self) -> list[Motion]:
        """End of audio: generate the remaining (possibly shorter) windows."""
        return list(self.rest())

    def add(self, chunk: np.ndarray) -> None:
        """Add mono float audio samples; :meth:`ready` then samples the windows they complete."""
        if self._done:
            raise RuntimeError("stream already flushed")
        chunk = np.asarray(chunk, dtype=np.float32).reshape(-1)
        self._audio = np.concatenate([self._audio, chunk])

    def ready(self) -> Iterator[Motion]:
        """The windows the audio added so far completes, each sampled when it is asked for."""
        while not self._done and self._sample(self.plan.audio_frames(self._index)[1]) <= self.received:
            yield self._run(total=None)

    def rest(self) -> Iterator[Motion]:
        """End of audio: the remaining (possibly shorter) windows, each sampled when asked for."""
        if self._done:
            return
        self._done = True
        total = math.ceil(self.received * self.fps / self.sample_rate)
        while self.plan.frames(self._index, total)[1] < total:
            yield self._run(total=total)

    def _run(self, total: int | None) -> Motion:
        i, plan = self._index, self.plan
        span_start, new_start, new_end, gen_end = plan.frames(i, total)
        a0, a1 = plan.audio_frames(i, total)
        lo, hi = self._sample(a0) - self._offset, self._sample(a1) - self._offset
        audio = self._audio[lo:hi] if total is None else self._audio[lo:]
        if self.whole is not None:  # offline with a non-local frontend: the clip's own features
            feats = self.whole[span_start:gen_end]
        else:  # the margin frames are computed and dropped: they keep the STFT's end padding away
            feats = self.gen.features(audio, self.sample_rate, a1 - a0)[span_start - a0:gen_end - a0]
        prefix = None if self._tail is None else self._tail[len(self._tail) - (new_start - span_start):]
        x = self.gen.window(i, feats, prefix, span_start, self.settings)  # [gen_end-span_start, N]
        kept = x[new_start - span_start:new_end - span_start]
        done = x[: new_end - span_start]
        self._tail = done[max(0, len(done) - plan.prefix):] if plan.prefix else None
        self._index += 1
        # drop audio no later window will read
        keep_from = self._sample(plan.audio_frames(self._index)[0]) - self._offset
        if keep_from > 0:
            self._audio = self._audio[keep_from:]
            self._offset += keep_from
        return self.gen.to_motion(kept, new_start, self.settings)
