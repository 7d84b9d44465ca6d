"""The ingress side of one ``/v1/stream`` connection.

Refused before ``accept()``: a page of a foreign origin, a wrong key in the ``X-API-Key`` header.
Then a cap on open streams (1013), the start message within ``stream.start_timeout_s``, and the
session: a reader task puts the client's audio into an :class:`~serve.stream.pacing.AudioBuffer`
while the step loop takes one hop at a time from it, sends each window's frames as the generator
yields them, and holds the stream's state between steps. A step whose generator replica died is
run once more, from the same state, on another replica (the portrait is sent again); frames
already sent are not sent twice. Every way a session ends closes the socket with a code of
:data:`~serve.stream.protocol.CLOSE`; the whole session lasts at most ``stream.max_session_s``.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import numpy as np
from pydantic import ValidationError

from serve.errors import ApiError, as_api_error, replica_lost, replica_unavailable
from serve.inputs import pcm16
from serve.stream.admission import ADMISSION, client_of, deny, refusal
from serve.stream.pacing import AudioBuffer, Left
from serve.stream.protocol import CLOSE, StartMessage, close_code, first_error

T = TypeVar("T")
OVERLOADED = ApiError(503, "overloaded", "the server is busy; try again shortly")


class _End:
    """The client's end message."""


async def close_with(ws: Any, code: int, error: ApiError | None = None) -> None:
    """Send the error message (if any) and close with ``code``; the client may be gone already."""
    try:
        if error is not None:
            await ws.send_text(json.dumps({"type": "error", **error.body()}))
        await ws.close(code=code, reason=(error.message if error else "")[:120])
    except Exception:  # noqa: BLE001 - a closed socket, or one closing under us
        pass


async def run_session(ws: Any, backend: Any) -> None:
    """Serve one WebSocket connection (``backend`` is the ingress: handles, config, key)."""
    refused = refusal(ws, backend)
    if refused is not None:
        await deny(ws, refused)
        return
    await ws.accept()
    client = client_of(ws)
    full = ADMISSION.enter(client, backend.cfg.stream)
    if full is not None:
        await close_with(ws, close_code(full), full)
        return
    try:
        await _run(Session(ws, backend))
    finally:
        ADMISSION.leave(client)


def _as_error(exc: BaseException) -> ApiError:
    """What a failed session tells the client."""
    from ray.serve.exceptions import BackPressureError

    if isinstance(exc, BackPressureError) or "BackPressure" in type(exc).__name__:
        return OVERLOADED
    api = as_api_error(exc)
    if api is not None:
        return api
    if replica_lost(exc):
        return replica_unavailable("the stream's generator")
    return ApiError(500, "internal_error", f"stream failed: {type(exc).__name__}")


async def _run(session: Session) -> None:
    """The session within its wall-clock limit; every failure closes the socket with its code."""
    from starlette.websockets import WebSocketDisconnect

    limit = session.opts.max_session_s
    try:
        async with asyncio.timeout(limit) as deadline:
            await session.run()
    except (WebSocketDisconnect, Left):
        return
    except Exception as exc:  # noqa: BLE001 - every failure ends this stream, never the server
        if isinstance(exc, TimeoutError) and deadline.expired():
            error = ApiError(408, "session_timeout", f"a stream may last {limit:g} s")
        else:
            error = _as_error(exc)
        await close_with(session.ws, close_code(error), error)


def client_item(message: dict[str, Any], start: StartMessage, limits: Any) -> Any:
    """One client message as the reader takes it: samples, :class:`_End`, None (the client
    left) or an :class:`ApiError`."""
    if message.get("type") == "websocket.disconnect":
        return None
    data, text = message.get("bytes"), message.get("text")
    if data is not None:
        if len(data) > limits.max_chunk_kb * 1024:
            return ApiError(413, "chunk_too_large", f"an audio message may hold {limits.max_chunk_kb} kB")
        try:
            return pcm16(data, start.channels)
        except ApiError as exc:
            return exc
    try:
        kind = json.loads(text).get("type")
    except (ValueError, AttributeError, TypeError):
        kind = None
    if kind == "end":
        return _End()
    return ApiError(400, "bad_message", 'expected binary PCM16 audio or {"type": "end"}')


class Session:
    """One stream: its start message, portrait, state (held here between steps) and counters."""

    def __init__(self, ws: Any, backend: Any) -> None:
        self.ws, self.backend = ws, backend
        self.opts, self.limits = backend.cfg.stream, backend.cfg.limits
        self.stepper = backend.animator.options(stream=True)
        self.start: StartMessage | None = None
        self.portrait: Any = None
        self.state: dict[str, Any] = {}
        self.sent_portrait = False  # whether the replica of the last step has the portrait
        self.frames_sent = self.steps = self.most_step = self.retries = 0

    async def run(self) -> None:
        """Handshake, then the reader and the step loop until the stream ends."""
        ready = await self.handshake()
        start = self.start
        buffer = AudioBuffer(start.sample_rate, ahead_s=self.opts.ahead_s,
                             max_buffer_s=self.opts.max_buffer_s, max_total_s=self.limits.max_stream_s)
        reader = asyncio.create_task(self.read(buffer))
        try:
            hop = round(ready["hop_frames"] * start.sample_rate / ready["fps"])
            await self.loop(buffer, hop)
        finally:
            reader.cancel()

    # -- handshake ------------------------------------------------------------------------
    async def receive_start(self) -> StartMessage:
        """The start message, within ``stream.start_timeout_s``, checked (key, rate, steps)."""
        try:
            message = await asyncio.wait_for(self.ws.receive(), self.opts.start_timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(408, "start_timeout", "no start message within "
                           f"{self.opts.start_timeout_s:g} s") from None
        if message.get("type") == "websocket.disconnect":
            raise Left()
        text = message.get("text")
        if text is None:
            raise ApiError(400, "bad_message", "the first message must be a JSON start message")
        try:
            start = StartMessage.model_validate_json(text)
        except ValidationError as exc:
            raise ApiError(400, "bad_start_message", *first_error(exc)) from None
        backend = self.backend
        keyed = self.ws.headers.get("x-api-key") is not None  # checked before accept()
        if backend.api_key is not None and not keyed and not backend.key_ok(start.api_key):
            raise ApiError(401, "unauthorized", "a valid API key is required")
        if start.sample_rate not in self.opts.sample_rates:
            raise ApiError(400, "bad_sample_rate", f"sample_rate must be one of {self.opts.sample_rates}",
                           field="sample_rate")
        if start.steps is not None and start.steps > self.limits.max_steps:
            raise ApiError(400, "bad_start_message", f"steps must be ≤ {self.limits.max_steps}", field="steps")
        return start

    async def handshake(self) -> dict[str, Any]:
        """Start message, portrait and the new stream's state; the client gets ``ready``."""
        self.start = start = await self.receive_start()
        self.portrait = await self.backend.portraits.get.remote(start.portrait_id)
        if self.portrait is None:
            raise ApiError(404, "unknown_portrait",
                           "portrait_id is unknown or expired; POST the image to /v1/portraits again",
                           field="portrait_id")
        state = await self.once_more(lambda: self.backend.animator.stream_open.remote(start))
        ready = state.pop("ready")
        self.state = state
        opts = self.opts
        ready["limits"] = {"ahead_s": opts.ahead_s, "max_buffer_s": opts.max_buffer_s,
                           "idle_timeout_s": opts.idle_timeout_s, "max_session_s": opts.max_session_s,
                           "max_stream_s": self.limits.max_stream_s}
        await self.ws.send_text(json.dumps(ready))
        return ready

    # -- the client's messages ------------------------------------------------------------
    async def read(self, buffer: AudioBuffer) -> None:
        """Feed the client's messages to ``buffer`` until its end message or the stream ends; a
        reader that fails ends the session with that failure, never leaves it waiting."""
        try:
            await self._read(buffer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the step loop, which closes the socket
            buffer.stop(exc)

    async def _read(self, buffer: AudioBuffer) -> None:
        idle = self.opts.idle_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(self.ws.receive(), idle)
            except asyncio.TimeoutError:
                buffer.stop(ApiError(408, "idle_timeout", f"no message for {idle:g} s"))
                return
            item = client_item(message, self.start, self.limits)
            if item is None:
                buffer.stop(Left())
                return
            if isinstance(item, _End):
                buffer.end()
                return
            error = item if isinstance(item, ApiError) else buffer.add(item)
            if error is not None:
                buffer.stop(error)
                return

    # -- generation -----------------------------------------------------------------------
    async def loop(self, buffer: AudioBuffer, hop: int) -> None:
        """One step per hop of audio (or less, when less has come) until the last; then ``end``
        and a normal close."""
        while True:
            audio, final = await buffer.take(hop)
            self.steps += 1
            self.most_step = max(self.most_step, len(audio))
            await self.once_more(functools.partial(self.step, audio, final))
            if final:
                end: dict[str, Any] = {"type": "end", "frames": self.state["frames"]}
                if self.start.stats:
                    end["stats"] = {"steps": self.steps, "most_step_samples": self.most_step,
                                    "hop_samples": hop, "retries": self.retries,
                                    "most_buffered_s": round(buffer.most_buffered / buffer.sr, 3)}
                await self.ws.send_text(json.dumps(end))
                await self.ws.close(code=CLOSE["normal"])
                return

    async def once_more(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, run a second time if its generator replica died under it (Serve sends the
        second to a live replica); losing that one too is a 503 (close 1013)."""
        try:
            return await call()
        except Exception as exc:
            if not replica_lost(exc):
                raise
        self.retries += 1
        self.sent_portrait = False  # the next replica may never have seen it
        try:
            return await call()
        except Exception as exc:
            if replica_lost(exc):
                raise replica_unavailable("the stream's generator") from None
            raise

    async def step(self, audio: np.ndarray, final: bool) -> None:
        """One generator step from the held state: frames sent as each window is rendered, then
        the new state kept. The portrait goes along when the replica may not have it."""
        portrait = None if self.sent_portrait else self.portrait
        for _ in range(2):
            response = self.stepper.stream_step.remote(self.state, audio, final, portrait,
                                                       self.start.portrait_id)
            async for item in response:
                if item.get("need_portrait"):
                    break
                for index, packet in item.get("frames", ()):
                    if index >= self.frames_sent:  # a retried step renders frames already sent
                        await self.ws.send_bytes(packet)
                        self.frames_sent = index + 1
                if "state" in item:
                    self.state, self.sent_portrait = item["state"], True
                    return
            portrait = self.portrait
        raise RuntimeError("the generator ended a stream step without its state")
