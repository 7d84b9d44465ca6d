"""Which web pages may drive the API: the Origin allow-list (config ``origins``).

A browser names the page behind every WebSocket handshake and every cross-origin or POST request
in the ``Origin`` header; without a check, any page the user opens could stream to or upload to a
server on their machine. Allowed: requests without an Origin (curl, SDKs, the Python client), the
server's own page (the Origin is the request's own ``Host``), and then either the listed origins
(``origins: [https://app.example.com, ...]``, ``"*"`` for any) or, while the list is unset, pages
on the loopback interface (``http://127.0.0.1``, ``http://localhost``, ``http://[::1]``, any
port). The ingress answers a refused HTTP request 403 ``forbidden_origin`` and refuses a refused
WebSocket handshake.
"""

from __future__ import annotations

from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def normalise(origin: str) -> str:
    """``scheme://host[:port]`` in lower case without a trailing slash."""
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str | None, host: str | None, origins: list[str] | None) -> bool:
    """Whether a request with this ``Origin`` (None: no header) to this ``Host`` is allowed."""
    if origin is None:
        return True
    origin = normalise(origin)
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not hostname:
        return False  # "null" (sandboxed frames, files) and anything stranger
    if host and parts.netloc == host.strip().lower():
        return True  # the server's own page
    if origins is None:
        return hostname in LOOPBACK_HOSTS
    allowed = {normalise(o) for o in origins}
    return "*" in allowed or origin in allowed
