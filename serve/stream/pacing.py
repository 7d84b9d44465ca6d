"""A stream's audio between the socket and the generator: bounded, and paced at real time.

Ray Serve's proxy reads a WebSocket as fast as the client sends (its queue has no bound), so not
reading would not slow a client down, only move the pile-up into the proxy. The ingress therefore
reads every message at once and bounds what it holds itself: audio more than ``max_buffer_s``
ahead of real time (counted from the first audio message) closes the stream 4413, and a stream
whose generator fell ``max_buffer_s`` behind closes 1013. The step loop takes at most one hop of
audio per step, no further ahead of real time than ``ahead_s``; the rest waits its turn.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from serve.errors import ApiError


class Left(Exception):
    """The client closed the connection."""


class AudioBuffer:
    """The audio received and not yet handed to the generator (one per stream)."""

    def __init__(self, sample_rate: int, *, ahead_s: float, max_buffer_s: float, max_total_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sr, self.ahead_s, self.max_buffer_s = sample_rate, ahead_s, max_buffer_s
        self.max_total_s = max_total_s
        self.clock = clock
        self.chunks: deque[np.ndarray] = deque()
        self.buffered = self.received = self.released = 0  # samples
        self.most_buffered = 0
        self.t0: float | None = None  # when the first audio arrived
        self.ended = False
        self.stopped: BaseException | None = None  # an ApiError, Left, or the reader's failure
        self._changed = asyncio.Event()

    # -- the reader's side ----------------------------------------------------------------
    def add(self, samples: np.ndarray) -> ApiError | None:
        """Hold ``samples``, or the error that ends the stream instead."""
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        self.received += len(samples)
        if self.received > self.max_total_s * self.sr:
            return ApiError(413, "audio_too_long", f"a stream may carry {self.max_total_s:g} s of audio")
        ahead = self.received / self.sr - (now - self.t0)
        if ahead > self.max_buffer_s:
            return ApiError(413, "audio_too_fast", f"audio arrived {ahead:.1f} s ahead of real time; "
                            f"send it as it is produced (at most {self.max_buffer_s:g} s ahead)")
        if (self.buffered + len(samples)) / self.sr > self.max_buffer_s:
            return ApiError(503, "stream_behind", f"generation fell {self.max_buffer_s:g} s behind "
                            "this stream; try again shortly")
        self.chunks.append(samples)
        self.buffered += len(samples)
        self.most_buffered = max(self.most_buffered, self.buffered)
        self._changed.set()
        return None

    def end(self) -> None:
        """The client's end message: what is held is the rest of the audio."""
        self.ended = True
        self._changed.set()

    def stop(self, why: BaseException) -> None:
        """End the stream (the step loop raises ``why`` at its next take)."""
        if self.stopped is None:
            self.stopped = why
        self._changed.set()

    # -- the step loop's side -------------------------------------------------------------
    async def take(self, most: int) -> tuple[np.ndarray, bool]:
        """Up to ``most`` samples once real time allows them, and whether they are the last;
        raises what :meth:`stop` was given."""
        while True:
            if self.stopped is not None:
                raise self.stopped
            want = min(most, self.buffered)
            wait: float | None = None
            if want == 0 and self.ended:
                return np.zeros(0, np.float32), True
            if want:
                wait = self._wait_s(want)
                if wait <= 0:
                    audio = self._pop(want)
                    return audio, self.ended and not self.buffered
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except asyncio.TimeoutError:
                pass

    def _wait_s(self, want: int) -> float:
        """Seconds until ``want`` more samples are no more than ``ahead_s`` ahead of real time."""
        allowed = (self.clock() - (self.t0 or 0.0) + self.ahead_s) * self.sr - self.released
        return 0.0 if allowed >= want else (want - allowed) / self.sr

    def _pop(self, n: int) -> np.ndarray:
        parts, got = [], 0
        while got < n:
            chunk = self.chunks.popleft()
            if got + len(chunk) > n:
                chunk, rest = chunk[:n - got], chunk[n - got:]
                self.chunks.appendleft(rest)
            parts.append(chunk)
            got += len(chunk)
        self.buffered -= n
        self.released += n
        return np.concatenate(parts) if len(parts) > 1 else parts[0]
