"""A small Python client of the API (used by ``disenttalk bench serve``, the tests, the README).

``requests`` for HTTP and the ``websockets`` sync client for ``/v1/stream``; no Ray needed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from disenttalk.constants import SAMPLE_RATE
from serve.stream import unpack_frame


@dataclass
class StreamResult:
    """What one stream delivered: the ready message, frames (header, JPEG, arrival s), the end."""

    ready: dict[str, Any]
    frames: list[tuple[dict[str, Any], bytes, float]] = field(default_factory=list)
    end: dict[str, Any] | None = None
    first_chunk_at: float = 0.0  # perf_counter when the first audio chunk was sent
    close_code: int | None = None
    error: dict[str, Any] | None = None
    http_status: int | None = None  # the handshake was refused with this HTTP status

    @property
    def first_frame_s(self) -> float | None:
        """Seconds from the first audio chunk to the first frame."""
        return self.frames[0][2] - self.first_chunk_at if self.frames else None

    @property
    def fps(self) -> float | None:
        """Frames per second delivered (first to last frame)."""
        if len(self.frames) < 2:
            return None
        return (len(self.frames) - 1) / max(self.frames[-1][2] - self.frames[0][2], 1e-6)


def ws_url(base_url: str) -> str:
    """``http://host:port`` → ``ws://host:port/v1/stream``."""
    return base_url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/v1/stream"


def to_pcm16(audio: np.ndarray) -> bytes:
    """float [-1, 1] → little-endian PCM16 bytes."""
    return (np.clip(audio, -1, 1) * 32767).round().astype("<i2").tobytes()


def stream(base_url: str, portrait_id: str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, *,
           chunk_ms: int = 200, realtime: bool = True, api_key: str | None = None,
           timeout: float = 120.0, origin: str | None = None,
           on_frame: Callable[[int], None] | None = None, **options: Any) -> StreamResult:
    """Send ``audio`` in PCM16 chunks (paced like a live source if ``realtime``); collect frames.

    ``origin``: the Origin header a browser page would send; ``on_frame(n)`` is called with the
    count of frames so far as each arrives. A refused handshake gives ``http_status``.
    """
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    start = {"type": "start", "portrait_id": portrait_id, "sample_rate": sample_rate,
             "channels": 1, "format": "pcm16", **options}
    if api_key:
        start["api_key"] = api_key
    try:
        # JPEG frames do not deflate: per-message compression would only cost both ends CPU
        ws = connect(ws_url(base_url), max_size=None, open_timeout=timeout, close_timeout=5,
                     origin=origin, proxy=None, compression=None)
    except InvalidStatus as exc:
        return StreamResult(ready={}, http_status=exc.response.status_code)
    with ws:
        result = StreamResult(ready={})
        try:
            ws.send(json.dumps(start))
        except ConnectionClosed:  # refused at once (a cap, 1013): the error and code follow
            pass
        if not _ready(ws, result, timeout):
            return result
        sender = threading.Thread(target=_send_audio, args=(ws, result, audio, sample_rate, chunk_ms,
                                                            realtime), daemon=True)
        sender.start()
        _receive(ws, result, timeout, on_frame)
        sender.join(timeout=5)
    return result


def _ready(ws: Any, result: StreamResult, timeout: float) -> bool:
    """Read the server's first message; whether it is ``ready`` (else the error and close code)."""
    from websockets.exceptions import ConnectionClosed

    try:
        first = json.loads(ws.recv(timeout=timeout))
    except ConnectionClosed as exc:
        result.close_code = exc.rcvd.code if exc.rcvd else None
        return False
    result.ready = first
    if first.get("type") == "ready":
        return True
    result.error = first.get("error")
    try:
        ws.recv(timeout=10)
    except ConnectionClosed as exc:
        result.close_code = exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        pass
    return False


def _send_audio(ws: Any, result: StreamResult, audio: np.ndarray, sample_rate: int, chunk_ms: int,
                realtime: bool) -> None:
    """The audio in chunks (a live source: chunk k exists only after (k+1)·chunk), then ``end``."""
    from websockets.exceptions import ConnectionClosed

    step = max(1, int(sample_rate * chunk_ms / 1000))
    t0 = time.perf_counter()
    result.first_chunk_at = t0
    try:
        for k, i in enumerate(range(0, len(audio), step)):
            if realtime:
                time.sleep(max(0.0, t0 + k * chunk_ms / 1000 - time.perf_counter()))
            ws.send(to_pcm16(audio[i:i + step]))
        ws.send(json.dumps({"type": "end"}))
    except ConnectionClosed:
        return


def _receive(ws: Any, result: StreamResult, timeout: float, on_frame: Callable[[int], None] | None) -> None:
    """Frames, the end message and errors until the server closes."""
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            message = ws.recv(timeout=timeout)
            if isinstance(message, bytes):
                header, jpeg = unpack_frame(message)
                result.frames.append((header, jpeg, time.perf_counter()))
                if on_frame is not None:
                    on_frame(len(result.frames))
                continue
            msg = json.loads(message)
            if msg.get("type") == "end":
                result.end = msg
            elif msg.get("type") == "error":
                result.error = msg.get("error")
    except ConnectionClosed as exc:
        result.close_code = exc.rcvd.code if exc.rcvd else None
