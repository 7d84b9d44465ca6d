"""Request bodies counted as they arrive: 413 before an oversized body is read into memory.

:class:`BodyLimit` is ASGI middleware around the whole app: it refuses a ``Content-Length`` over
the limit without reading anything, and counts the bytes of every ``http.request`` message as
the app receives them, so a chunked upload (no ``Content-Length``) is stopped the moment it
passes the limit: two files and the fields for ``/v1/generate``, one for ``/v1/portraits``, 64 KiB
for any other body (``/v1/speech``'s JSON). :func:`read_form` parses ``multipart/form-data`` with a cap on each file part,
checked as the part streams in (files past 1 MB spool to disk, never whole in memory).

A body of many megabytes passes through the ingress as many pickled messages from Serve's proxy;
once they are freed, glibc keeps most of their pages in its heaps (it only gives back the top
of a heap by itself), so every large upload, refused or not, would leave the ingress larger.
The ingress calls :func:`bound_heap` first thing, so blocks of a megabyte or more are unmapped
as soon as they are freed; and half a second after a request that read at least
:data:`TRIM_BYTES`, :func:`release_freed_heap` hands back the freed pages left inside the heaps
(``malloc_trim``), off the event loop and one at a time.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import json
import os
import threading
from typing import Any

from starlette.formparsers import MultiPartParser

from serve.errors import ApiError

FIELDS_BYTES = 65536  # the text fields of a form, all together
TRIM_BYTES = 4 * 1024 * 1024  # a body at least this large is followed by release_freed_heap()

_trimming = threading.Lock()


def _glibc(name: str) -> Any:
    """A function of glibc's malloc (``malloc_trim``, ``mallopt``), or None (another C library)."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc("malloc_trim")
_MALLOPT = _glibc("mallopt")
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # mallopt parameters (malloc.h)
MMAP_BYTES = 1024 * 1024  # bound_heap(): allocations this large are mapped on their own


def bound_heap() -> bool:
    """Keep this process's heaps near what it holds, for a process that passes large short-lived
    buffers (the ingress: request bodies, videos): an allocation of :data:`MMAP_BYTES` or more is
    mapped on its own and unmapped when freed (by default glibc raises that threshold to the
    largest block freed so far, up to 32 MB, and keeps such blocks in its heaps), and threads
    share at most two heaps (arenas) instead of up to eight per core. Call it early, before the
    threads start; False off glibc."""
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(M_MMAP_THRESHOLD, MMAP_BYTES)) & bool(_MALLOPT(M_ARENA_MAX, 2))


def release_freed_heap() -> bool:
    """Give the pages of freed heap memory back to the OS (glibc's ``malloc_trim(0)``, which
    also releases free pages inside a heap, not only at its top). False when another call is
    under way or the C library has no ``malloc_trim``."""
    if _MALLOC_TRIM is None or not _trimming.acquire(blocking=False):
        return False
    try:
        _MALLOC_TRIM(0)
        return True
    finally:
        _trimming.release()


def too_large(what: str, limit: int, field: str | None = None, size: int | None = None) -> ApiError:
    """413 ``upload_too_large``: ``what`` is over ``limit`` bytes (``size``, when known)."""
    mb = 1024 * 1024
    message = (f"{what} is {size / mb:.1f} MB; the limit is {limit / mb:.3g} MB" if size is not None
               else f"{what} is over the limit of {limit / mb:.3g} MB")
    return ApiError(413, "upload_too_large", message, field=field)


def body_limit(max_upload_mb: float, files: int = 2) -> int:
    """Bytes a request body may have: ``files`` uploads at their cap plus the form's fields."""
    return int(files * max_upload_mb * 1024 * 1024) + FIELDS_BYTES


def body_limits(max_upload_mb: float) -> dict[str, int]:
    """The body limit of each route that takes files; any other body: :data:`FIELDS_BYTES`."""
    return {"/v1/generate": body_limit(max_upload_mb, 2), "/v1/portraits": body_limit(max_upload_mb, 1)}


async def _answer(send: Any, err: ApiError) -> None:
    body = json.dumps(err.body()).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


_pending: set[asyncio.Task] = set()


def _trim_soon(delay_s: float = 0.5) -> None:
    """:func:`release_freed_heap` in a thread ``delay_s`` from now, once Serve has dropped the
    request's messages (its receive queue lives until the request is done)."""

    async def later() -> None:
        await asyncio.sleep(delay_s)
        await asyncio.to_thread(release_freed_heap)

    task = asyncio.get_running_loop().create_task(later())
    _pending.add(task)
    task.add_done_callback(_pending.discard)


class BodyLimit:
    """ASGI middleware: 413 ``upload_too_large`` once a request body passes its route's limit
    (``routes``: path → bytes; any other path: ``limit``).

    Past the limit, ``receive`` raises the 413 into the app (a form being parsed stops there),
    whatever the app then tries to answer is dropped, and the 413 is sent instead; the rest of
    the body is never read by the app.
    """

    def __init__(self, app: Any, limit: int = FIELDS_BYTES, routes: dict[str, int] | None = None) -> None:
        self.app, self.default, self.routes = app, int(limit), dict(routes or {})

    def limit(self, scope: dict) -> int:
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        return self.routes.get(path, self.default)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope)
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _answer(send, too_large("the request body", limit, size=int(declared)))
            return
        state = {"bytes": 0, "error": None, "started": False}

        async def counted() -> dict:
            if state["error"] is not None:
                raise state["error"]
            message = await receive()
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                if state["bytes"] > limit:
                    state["error"] = too_large("the request body", limit)
                    raise state["error"]
            return message

        async def guarded(message: dict) -> None:
            if state["error"] is None:  # past the limit the app's own answer is dropped
                state["started"] = True
                await send(message)

        try:
            try:
                await self.app(scope, counted, guarded)
            except Exception:
                if state["error"] is None:
                    raise
            if state["error"] is not None and not state["started"]:
                await _answer(send, state["error"])
        finally:
            if state["bytes"] >= TRIM_BYTES:
                _trim_soon()


PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"  # read by Serve's HTTP proxy
PROXY_CALLBACK = "serve.upload:proxy_middlewares"
PROXY_LIMIT_ENV = "DISENTTALK_PROXY_MAX_BODY_BYTES"


def proxy_body_limit(max_upload_mb: float) -> int:
    """What Serve's HTTP proxy lets through of any request body: the largest body a route takes
    (two files and the fields) and a megabyte, as ``infra/ingress.yaml`` caps it in front."""
    return body_limit(max_upload_mb, 2) + 1024 * 1024


class ProxyBodyCap:
    """ASGI middleware for Serve's HTTP proxy: a request body stops being read at ``limit``.

    The proxy reads a body into a queue of its own without bound and hands everything queued to
    the replica in one call, so without a cap a fast client's chunked upload fills the proxy's
    memory and reaches the ingress in batches of tens of megabytes through Ray's object store.
    Over a declared ``Content-Length`` it answers 413 ``upload_too_large`` without reading;
    counting a chunked body, past the limit it answers 413 (unless the app has begun its own
    answer, e.g. the ingress's 413 for a route limit) and tells the app the client has gone.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.max_bytes = app, int(limit)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _answer(send, too_large("the request body", self.max_bytes, size=int(declared)))
            return
        state = {"bytes": 0, "over": False, "started": False, "answered": False}

        async def capped() -> dict:
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["bytes"] += len(message.get("body", b""))
                if state["bytes"] > self.max_bytes:
                    state["over"] = True
                    if not state["started"]:
                        state["answered"] = True
                        await _answer(send, too_large("the request body", self.max_bytes))
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict) -> None:
            if not state["answered"]:  # after its own 413 the app's answer is dropped
                state["started"] = True
                await send(message)

        await self.app(scope, capped, guarded)


def proxy_middlewares() -> list:
    """Serve's HTTP proxy callback (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` =
    :data:`PROXY_CALLBACK`): :class:`ProxyBodyCap` at ``DISENTTALK_PROXY_MAX_BODY_BYTES``
    (``disenttalk serve`` sets both for the cluster it starts); none when that is not set."""
    from starlette.middleware import Middleware

    limit = os.environ.get(PROXY_LIMIT_ENV, "")
    return [Middleware(ProxyBodyCap, limit=int(limit))] if limit.isdigit() else []


class _CappedParser(MultiPartParser):
    """Starlette's multipart parser with a cap on each file part, checked as its bytes arrive."""

    def __init__(self, *args: Any, max_file_size: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_file_size, self._file_bytes = int(max_file_size), 0

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._file_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self._file_bytes += end - start
            if self._file_bytes > self.max_file_size:
                name = self._current_part.field_name or None
                raise too_large(f"the {name or 'file'} upload", self.max_file_size, field=name)
        super().on_part_data(data, start, end)


async def read_form(request: Any, max_file_mb: float, max_files: int = 2, max_fields: int = 16) -> Any:
    """The multipart form of ``request``: at most ``max_files`` files of ``max_file_mb`` each
    (413 ``upload_too_large`` naming the field as soon as one passes it), ``max_fields`` text
    fields of at most :data:`FIELDS_BYTES` bytes. Parser errors are Starlette's
    ``MultiPartException``."""
    parser = _CappedParser(request.headers, request.stream(), max_files=max_files,
                           max_fields=max_fields, max_part_size=FIELDS_BYTES,
                           max_file_size=int(max_file_mb * 1024 * 1024))
    return await parser.parse()
