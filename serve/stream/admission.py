"""Who may open a stream: the Origin and a key in the header before the handshake is accepted,
then a cap on open streams per ingress replica and per client address."""

from __future__ import annotations

from collections import Counter
from typing import Any

from serve.errors import ApiError
from serve.origins import origin_allowed
from serve.stream.protocol import CLOSE


def refusal(ws: Any, backend: Any) -> ApiError | None:
    """Why the handshake is refused before ``accept()`` (None: go on): a page of a foreign origin,
    or a wrong key in the ``X-API-Key`` header (a key in the start message is checked later)."""
    if not origin_allowed(ws.headers.get("origin"), ws.headers.get("host"), backend.cfg.origins):
        return ApiError(403, "forbidden_origin", "pages of this origin may not use this server "
                        "(config origins)")
    key = ws.headers.get("x-api-key")
    if key is not None and backend.api_key is not None and not backend.key_ok(key):
        return ApiError(401, "unauthorized", "the X-API-Key header holds a wrong key")
    return None


async def deny(ws: Any, error: ApiError) -> None:
    """Refuse the handshake: the error's HTTP status and JSON body where the server can send them
    (the WebSocket denial response extension), else a bare refusal (HTTP 403)."""
    from fastapi.responses import JSONResponse

    try:
        await ws.send_denial_response(JSONResponse(error.body(), status_code=error.status))
    except RuntimeError:  # the server has no denial responses
        await ws.close(code=CLOSE["policy"], reason=error.message[:120])


def client_of(ws: Any) -> str:
    """The client's address (streams are capped per address)."""
    client = getattr(ws, "client", None)
    return getattr(client, "host", None) or "unknown"


class Admission:
    """The streams open on this ingress replica, in all and per client address."""

    def __init__(self) -> None:
        self.open = 0
        self.by_client: Counter[str] = Counter()

    def enter(self, client: str, opts: Any) -> ApiError | None:
        """Count a new stream of ``client``, or the 503 (close 1013) of one past a cap."""
        if self.open >= opts.max_streams:
            return ApiError(503, "too_many_streams", f"this server has {opts.max_streams} streams "
                            "open, its most; try again shortly")
        if self.by_client[client] >= opts.max_streams_per_client:
            return ApiError(503, "too_many_streams", f"{opts.max_streams_per_client} streams are "
                            "open from your address, the most; close one first")
        self.open += 1
        self.by_client[client] += 1
        return None

    def leave(self, client: str) -> None:
        """A stream of ``client`` ended."""
        self.open = max(0, self.open - 1)
        self.by_client[client] -= 1
        if self.by_client[client] <= 0:
            del self.by_client[client]


ADMISSION = Admission()  # one ingress replica per process
