"""Serve's HTTP proxy stops reading a request body past the largest any route takes
(serve/upload.py ProxyBodyCap, installed through Serve's proxy callback)."""

from __future__ import annotations

import asyncio
import json

from serve import upload

MB = 1024 * 1024


def proxy_like(answer_after: int | None = None):
    """An ASGI app that reads like Serve's proxy: a task pulls ``receive`` into a queue until
    the client is gone or the body ends, while the "replica" waits for the body; it answers 200
    with the bytes it got, or (``answer_after``: a route limit) 413 of its own after that many."""
    seen = {"calls": 0, "bytes": 0, "sent": []}

    async def app(scope, receive, send):
        done = asyncio.Event()

        async def pull():
            while True:
                message = await receive()
                seen["calls"] += 1
                if message["type"] == "http.disconnect":
                    break
                seen["bytes"] += len(message.get("body", b""))
                if answer_after is not None and seen["bytes"] > answer_after:
                    await send({"type": "http.response.start", "status": 413, "headers": []})
                    await send({"type": "http.response.body", "body": b"route"})
                if not message.get("more_body"):
                    break
            done.set()

        task = asyncio.create_task(pull())
        await done.wait()
        await task
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(seen["bytes"]).encode()})

    return app, seen


def run(app, messages: list[dict], headers: list | None = None) -> tuple[list[dict], int]:
    """The messages the client got, and how many body messages were taken from it."""
    got, taken = [], 0

    async def receive():
        nonlocal taken
        if taken < len(messages):
            taken += 1
            return messages[taken - 1]
        await asyncio.sleep(3600)  # a client that has nothing more to send

    async def send(message):
        got.append(message)

    scope = {"type": "http", "path": "/v1/generate", "headers": headers or []}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    return got, taken


def body(n: int, chunk: int = MB) -> list[dict]:
    sizes = [chunk] * (n // chunk)
    return [{"type": "http.request", "body": bytes(s), "more_body": i < len(sizes) - 1}
            for i, s in enumerate(sizes)]


def status(got: list[dict]) -> tuple[list[int], list[bytes]]:
    return ([m["status"] for m in got if m["type"] == "http.response.start"],
            [m.get("body", b"") for m in got if m["type"] == "http.response.body"])


def test_a_chunked_body_past_the_cap_is_not_read_on_and_gets_413():
    app, seen = proxy_like()
    got, taken = run(upload.ProxyBodyCap(app, limit=5 * MB), body(200 * MB))
    statuses, bodies = status(got)
    assert statuses == [413]  # the app's own answer after the disconnect is dropped
    assert json.loads(bodies[0])["error"]["code"] == "upload_too_large"
    assert taken == 6  # 6 MB of 200 taken from the client
    assert seen["bytes"] == 5 * MB  # the message that passed the cap never reaches the app


def test_a_declared_body_past_the_cap_is_refused_unread():
    app, seen = proxy_like()
    got, taken = run(upload.ProxyBodyCap(app, limit=5 * MB), body(8 * MB),
                     headers=[(b"content-length", str(8 * MB).encode())])
    assert status(got)[0] == [413] and taken == 0 and seen["calls"] == 0


def test_a_body_under_the_cap_passes_whole():
    app, seen = proxy_like()
    got, taken = run(upload.ProxyBodyCap(app, limit=5 * MB), body(4 * MB))
    assert status(got) == ([200], [str(4 * MB).encode()]) and taken == 4


def test_an_answer_the_app_has_begun_is_not_doubled():
    """The ingress refused first (a route's own limit, naming the field): that answer stands,
    and the cap only stops the reading."""
    app, seen = proxy_like(answer_after=2 * MB)
    got, taken = run(upload.ProxyBodyCap(app, limit=5 * MB), body(200 * MB))
    statuses, bodies = status(got)
    assert statuses[0] == 413 and bodies[0] == b"route"
    assert taken == 6


def test_the_proxy_callback_reads_the_cap_from_the_environment(monkeypatch):
    monkeypatch.delenv(upload.PROXY_LIMIT_ENV, raising=False)
    assert upload.proxy_middlewares() == []
    monkeypatch.setenv(upload.PROXY_LIMIT_ENV, str(upload.proxy_body_limit(20.0)))
    (middleware,) = upload.proxy_middlewares()
    assert middleware.cls is upload.ProxyBodyCap
    assert middleware.kwargs == {"limit": upload.body_limit(20.0, 2) + MB}
