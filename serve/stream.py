"""``WS /v1/stream``: speech in as it is produced, video frames out as soon as they exist.

Protocol (client → server):

1. a text message ``{"type": "start", "portrait_id": ..., "sample_rate": 16000, "channels": 1,
   "format": "pcm16", ...options}`` (options as ``/v1/generate``: steps, guidance, seed,
   lip/eye/global_scale, blinks, crop_only; ``api_key`` when the server has one);
2. binary messages of little-endian PCM16 audio at that rate (interleaved if stereo), any
   length up to the chunk limit (100–200 ms each is typical);
3. a text message ``{"type": "end"}``: the rest of the audio is generated and flushed.

Server → client: ``{"type": "ready", ...}`` (fps, window, the latency it gives), then one
binary message per video frame, in order: a 4-byte big-endian header length, the JSON header
``{"type": "frame", "index", "t", "audio": [first, end)}`` (``audio`` is the frame's span of
the client's own samples, to play in sync) and the JPEG. After the end message:
``{"type": "end", "frames": N}`` and close 1000. Errors: ``{"type": "error", "error": {code,
message}}`` then a close code from :data:`CLOSE`.

Generation state lives in the message the ingress sends with each chunk, not in a replica, so
every chunk may go to any generator replica (autoscaling and restarts never strand a stream).
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from disenttalk.constants import SAMPLE_RATE
from disenttalk.generate.motion import MAX_BLINK_RATE
from serve.errors import ApiError, as_api_error
from serve.inputs import pcm16

CLOSE = {  # WebSocket close codes (4000–4999 are the application's own)
    "normal": 1000,
    "unsupported_data": 1003,  # text where audio was expected, or the reverse
    "message_too_big": 1009,
    "internal_error": 1011,
    "try_again_later": 1013,  # overloaded: past max_queued_requests
    "bad_request": 4400,
    "unauthorized": 4401,
    "not_found": 4404,
    "timeout": 4408,
    "too_long": 4413,
    "unprocessable": 4422,
}
STATUS_CLOSE = {400: 4400, 401: 4401, 404: 4404, 413: 4413, 415: 1003, 422: 4422, 503: 1013}
IDLE_TIMEOUT_S = 30.0


class StartMessage(BaseModel):
    """The first message of a stream."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["start"]
    portrait_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    sample_rate: int = SAMPLE_RATE
    channels: Literal[1, 2] = 1
    format: Literal["pcm16"] = "pcm16"
    steps: int | None = Field(None, ge=1, le=100)
    guidance: float | None = Field(None, ge=0.0, le=10.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    lip_scale: float = Field(1.0, ge=0.0, le=3.0)
    eye_scale: float = Field(1.0, ge=0.0, le=3.0)
    global_scale: float = Field(1.0, ge=0.0, le=3.0)
    blinks: bool = True
    blink_rate: float | None = Field(None, ge=0.0, le=MAX_BLINK_RATE)
    crop_only: bool = True
    api_key: str | None = None


# -- frames on the wire ---------------------------------------------------------------------
def pack_frame(header: dict[str, Any], jpeg: bytes) -> bytes:
    """One frame message: header length (uint32 BE), JSON header, JPEG."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(head)) + head + jpeg


def unpack_frame(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Inverse of :func:`pack_frame` (for Python clients)."""
    (n,) = struct.unpack(">I", data[:4])
    return json.loads(data[4:4 + n]), data[4 + n:]


def jpeg(frame: np.ndarray, quality: int) -> bytes:
    """uint8 [H,W,3] → JPEG bytes."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# -- generation state that travels with each chunk ------------------------------------------
def detach(stream: Any) -> dict[str, Any]:
    """A MotionStream's state without its generator (small: the audio of one window, a tail)."""
    return {k: v for k, v in vars(stream).items() if k != "gen"}


def attach(state: dict[str, Any], generator: Any) -> Any:
    """The MotionStream of :func:`detach`'s state, driven by ``generator``."""
    from disenttalk.generate import MotionStream

    stream = MotionStream.__new__(MotionStream)
    stream.__dict__.update(state)
    stream.gen = generator
    return stream


def open_stream(engine: Any, start: StartMessage) -> dict[str, Any]:
    """A new stream's state (generator side)."""
    from serve.engine import controls

    model = engine.current()
    steps = start.steps or engine.cfg.stream.steps
    stream = model.live.open_stream(start.sample_rate, steps=steps, guidance=start.guidance,
                                    seed=start.seed, controls=controls(start))
    plan, fps = model.live.plan, model.live.fps
    ready = {"type": "ready", "fps": fps, "sample_rate": start.sample_rate, "steps": steps,
             "hop_frames": plan.hop, "first_hop_frames": plan.first,
             "look_ahead_frames": plan.look_ahead,
             "latency_s": round((plan.first + plan.look_ahead + plan.margin) / fps, 3),
             "model_version": model.info["version"]}
    return {"stream": detach(stream), "start": start.model_dump(exclude={"api_key"}), "frames": 0,
            "ready": ready}


def step_stream(engine: Any, state: dict[str, Any], audio: np.ndarray, final: bool,
                portrait: Any) -> dict[str, Any]:
    """Push audio (and flush when ``final``): the new state and the frame messages now ready."""
    model = engine.current()
    start = StartMessage(**state["start"])
    stream = attach(state["stream"], model.live)
    motions = stream.push(audio) if len(audio) else []
    if final:
        motions += stream.flush()
    sr, fps = start.sample_rate, model.live.fps
    quality = engine.cfg.stream.jpeg_quality
    packets = []
    for motion in motions:
        frames = engine.frames(model, model.live, motion, portrait, start.crop_only)
        for k, frame in enumerate(frames):
            i = motion.start + k
            header = {"type": "frame", "index": i, "t": round(i / fps, 4),
                      "audio": [round(i * sr / fps), round((i + 1) * sr / fps)]}
            packets.append(pack_frame(header, jpeg(frame, quality)))
    state = {**state, "stream": detach(stream), "frames": state["frames"] + len(packets)}
    return {"state": state, "packets": packets}


# -- the ingress side of a connection -------------------------------------------------------
class _End:
    pass


async def _close(ws: Any, code: int, error: ApiError | None = None) -> None:
    try:
        if error is not None:
            await ws.send_text(json.dumps({"type": "error", **error.body()}))
        await ws.close(code=code, reason=(error.message if error else "")[:120])
    except Exception:  # the client may already be gone
        pass


async def run_session(ws: Any, backend: Any) -> None:
    """Serve one WebSocket connection (``backend`` is the ingress: handles, limits, key)."""
    from ray.serve.exceptions import BackPressureError
    from starlette.websockets import WebSocketDisconnect

    await ws.accept()
    try:
        await _session(ws, backend)
    except WebSocketDisconnect:
        return
    except BackPressureError:
        await _close(ws, CLOSE["try_again_later"],
                     ApiError(503, "overloaded", "the server is busy; try again shortly"))
    except Exception as exc:  # noqa: BLE001 - every failure ends this stream, never the server
        api = as_api_error(exc)
        if api is None:
            if "BackPressure" in type(exc).__name__ or "BackPressure" in str(exc)[:200]:
                api = ApiError(503, "overloaded", "the server is busy; try again shortly")
            else:
                api = ApiError(500, "internal_error", f"stream failed: {type(exc).__name__}")
        await _close(ws, STATUS_CLOSE.get(api.status, CLOSE["internal_error"]), api)


async def _receive_start(ws: Any, backend: Any) -> StartMessage:
    try:
        message = await asyncio.wait_for(ws.receive(), IDLE_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise ApiError(400, "timeout", "no start message") from None
    if message.get("type") == "websocket.disconnect":
        from starlette.websockets import WebSocketDisconnect

        raise WebSocketDisconnect(message.get("code", 1000))
    text = message.get("text")
    if text is None:
        raise ApiError(400, "bad_message", "the first message must be a JSON start message")
    try:
        start = StartMessage.model_validate_json(text)
    except ValidationError as exc:
        raise ApiError(400, "bad_start_message", *_first_error(exc)) from None
    if backend.api_key is not None and not backend.key_ok(start.api_key or ws.headers.get("x-api-key")):
        raise ApiError(401, "unauthorized", "a valid API key is required")
    if start.sample_rate not in backend.cfg.stream.sample_rates:
        raise ApiError(400, "bad_sample_rate",
                       f"sample_rate must be one of {backend.cfg.stream.sample_rates}", field="sample_rate")
    if start.steps is not None and start.steps > backend.cfg.limits.max_steps:
        raise ApiError(400, "bad_start_message", f"steps must be ≤ {backend.cfg.limits.max_steps}",
                       field="steps")
    return start


def _first_error(exc: ValidationError) -> tuple[str, str | None]:
    """The message of the first validation error and the field it names (None: the whole message)."""
    err = exc.errors()[0]
    loc = err.get("loc", ())
    where = ".".join(str(p) for p in loc) or "message"
    field = loc[0] if loc and isinstance(loc[0], str) else None
    return f"{where}: {err.get('msg', 'invalid')}", field


async def _handshake(ws: Any, backend: Any) -> tuple[StartMessage, Any, dict[str, Any]]:
    """The start message, its portrait and the new stream's state; the client gets ``ready``."""
    start = await _receive_start(ws, backend)
    portrait = await backend.portraits.get.remote(start.portrait_id)
    if portrait is None:
        raise ApiError(404, "unknown_portrait",
                       "portrait_id is unknown or expired; POST the image to /v1/portraits again",
                       field="portrait_id")
    state = await backend.animator.stream_open.remote(start)
    await ws.send_text(json.dumps(state.pop("ready")))
    return start, portrait, state


def _item(message: dict[str, Any], start: StartMessage, limits: Any) -> Any:
    """One client message as the step loop takes it: samples, :class:`_End`, None (the client
    left) or an :class:`ApiError`."""
    if message.get("type") == "websocket.disconnect":
        return None
    data, text = message.get("bytes"), message.get("text")
    if data is not None:
        if len(data) > limits.max_chunk_kb * 1024:
            return ApiError(413, "chunk_too_large",
                            f"an audio message may hold {limits.max_chunk_kb} kB")
        try:
            return pcm16(data, start.channels)
        except ApiError as exc:
            return exc
    try:
        kind = json.loads(text).get("type")
    except (ValueError, AttributeError):
        kind = None
    if kind == "end":
        return _End()
    return ApiError(400, "bad_message", 'expected binary PCM16 audio or {"type": "end"}')


async def _reader(ws: Any, start: StartMessage, limits: Any, queue: asyncio.Queue) -> None:
    """Queue the client's messages as they arrive (see :func:`_item`); after anything but audio,
    an idle timeout or more audio than a stream may carry, the last item is queued and it stops."""
    max_samples = int(limits.max_stream_s * start.sample_rate)
    received = 0
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), IDLE_TIMEOUT_S)
        except asyncio.TimeoutError:
            await queue.put(ApiError(400, "timeout", f"no audio for {IDLE_TIMEOUT_S:g} s"))
            return
        item = _item(message, start, limits)
        if isinstance(item, np.ndarray):
            received += len(item)
            if received > max_samples:
                item = ApiError(413, "audio_too_long",
                                f"a stream may carry {limits.max_stream_s:g} s of audio")
        await queue.put(item)
        if not isinstance(item, np.ndarray):
            return


async def _drain(queue: asyncio.Queue) -> list[Any]:
    """The next item and everything else that arrived while the last step was generated."""
    items = [await queue.get()]
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def _step(backend: Any, state: dict[str, Any], audio: np.ndarray, final: bool,
                portrait: Any, start: StartMessage, send_portrait: bool) -> dict[str, Any]:
    """One generator step; the portrait goes along the first time, and again when a replica
    that does not hold it yet asks for it."""
    result = await backend.animator.stream_step.remote(
        state, audio, final, portrait if send_portrait else None, start.portrait_id)
    if result.get("need_portrait"):
        result = await backend.animator.stream_step.remote(
            state, audio, final, portrait, start.portrait_id)
    return result


async def _step_loop(ws: Any, backend: Any, start: StartMessage, portrait: Any,
                     state: dict[str, Any], queue: asyncio.Queue) -> None:
    """Generate from the queued audio and send the frames, until the end message (then the
    ``end`` reply and a normal close), the client leaving, or an error (raised)."""
    sent_portrait = False
    while True:
        items = await _drain(queue)
        final = any(isinstance(x, _End) for x in items)
        for x in items:
            if x is None:
                return  # the client left
            if isinstance(x, ApiError):
                raise x
        chunks = [x for x in items if isinstance(x, np.ndarray)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        result = await _step(backend, state, audio, final, portrait, start, not sent_portrait)
        sent_portrait = True
        state = result["state"]
        for packet in result["packets"]:
            await ws.send_bytes(packet)
        if final:
            await ws.send_text(json.dumps({"type": "end", "frames": state["frames"]}))
            await ws.close(code=CLOSE["normal"])
            return


async def _session(ws: Any, backend: Any) -> None:
    start, portrait, state = await _handshake(ws, backend)
    queue: asyncio.Queue = asyncio.Queue()
    task = asyncio.create_task(_reader(ws, start, backend.cfg.limits, queue))
    try:
        await _step_loop(ws, backend, start, portrait, state, queue)
    finally:
        task.cancel()
