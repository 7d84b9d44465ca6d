"""The wire format of ``/v1/stream``: the start message, frame messages and close codes."""

from __future__ import annotations

import json
import struct
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from disenttalk.constants import SAMPLE_RATE
from disenttalk.generate.motion import MAX_BLINK_RATE
from serve.errors import ApiError

CLOSE = {  # WebSocket close codes (4000–4999 are the application's own)
    "normal": 1000,
    "unsupported_data": 1003,  # text where audio was expected, or the reverse
    "policy": 1008,  # refused before the stream opened (origin, key in the header)
    "message_too_big": 1009,
    "internal_error": 1011,
    "try_again_later": 1013,  # overloaded, too many streams, a generator replica lost twice
    "bad_request": 4400,
    "unauthorized": 4401,
    "forbidden": 4403,
    "not_found": 4404,
    "timeout": 4408,  # no start message, no audio, or the session's wall-clock limit
    "too_long": 4413,  # a chunk, the stream's audio, or audio sent too far ahead of real time
    "unprocessable": 4422,
}
STATUS_CLOSE = {400: 4400, 401: 4401, 403: 4403, 404: 4404, 408: 4408, 413: 4413, 415: 1003,
                422: 4422, 503: 1013}


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
    stats: bool = Field(False, description="add the session's counters (steps, the most audio one "
                        "step carried, retries) to the end message")
    api_key: str | None = None


def first_error(exc: ValidationError) -> tuple[str, str | None]:
    """The message of the first validation error and the field it names (None: the whole message)."""
    err = exc.errors()[0]
    loc = err.get("loc", ())
    where = ".".join(str(p) for p in loc) or "message"
    field = loc[0] if loc and isinstance(loc[0], str) else None
    return f"{where}: {err.get('msg', 'invalid')}", field


def close_code(error: ApiError) -> int:
    """The WebSocket close code of an error (its HTTP status mapped, else 1011)."""
    return STATUS_CLOSE.get(error.status, CLOSE["internal_error"])


# -- frames on the wire ---------------------------------------------------------------------
def pack_frame(header: dict[str, Any], jpeg: bytes) -> bytes:
    """One frame message: header length (uint32 BE), JSON header, JPEG."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack(">I", len(head)) + head + jpeg


def unpack_frame(data: bytes) -> tuple[dict[str, Any], bytes]:
    """Inverse of :func:`pack_frame` (for Python clients)."""
    (n,) = struct.unpack(">I", data[:4])
    return json.loads(data[4:4 + n]), data[4 + n:]
