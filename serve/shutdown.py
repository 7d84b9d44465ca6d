"""Stopping ``disenttalk serve`` on SIGTERM or Ctrl-C: drain, then stop Ray, leaving no process.

``docker stop``, systemd and Kubernetes stop a program with SIGTERM; Ctrl-C sends SIGINT. Both
take the same path (:func:`stop`), bounded by ``shutdown_grace_s``:

1. **drain** (``shutdown_grace_s`` − :data:`STOP_RESERVE_S`): every Ingress replica is told
   through its deployment handle (:meth:`Connections.drain`). From then on it answers new
   requests 503 ``shutting_down`` (``Retry-After``) and new streams close 1001; requests and
   streams in flight go on. When none is left, or at the end of the window, it closes the streams
   still open with an ``error`` message ``shutting_down`` and close code **1001** (going away)
   and answers the requests still running 503 ``shutting_down``.
2. **stop**: a local Ray cluster this process started is shut down (its controller, proxies,
   replicas, raylet, GCS, dashboard and agents with it); on a cluster reached by ``RAY_ADDRESS``
   Serve is shut down instead. Processes this one started that outlive that (the agents Ray
   starts in their own process groups) get SIGTERM, then SIGKILL: nothing is left behind.

The ingress side is an ASGI middleware (:class:`DrainMiddleware`) around the FastAPI app: it
counts the open requests and WebSockets and can end a stream from outside the stream's own code
(it sends the close itself, drops the stream's later messages and hands the stream a disconnect).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

GOING_AWAY = 1001  # WebSocket close code of a stream ended by the server's shutdown
STOP_RESERVE_S = 6.0  # of shutdown_grace_s, kept for stopping Serve and Ray after the drain
SHUTTING_DOWN = {"code": "shutting_down", "message": "the server is shutting down; try again shortly"}


# -- the ingress side ---------------------------------------------------------------------------
class _Stream:
    """One WebSocket seen through the middleware: its ``receive``/``send`` as the app gets them,
    and :meth:`close`, which ends it from outside the app."""

    def __init__(self, receive: Any, send: Any) -> None:
        self._receive, self._send = receive, send
        self._lock = asyncio.Lock()
        self._pending: asyncio.Future | None = None
        self.cut = asyncio.Event()
        self.accepted = self.finished = False

    async def receive(self) -> dict:
        if not self.cut.is_set():
            if self._pending is None:  # kept across a cancelled receive: no message is lost
                self._pending = asyncio.ensure_future(self._receive())
            cut = asyncio.ensure_future(self.cut.wait())
            try:
                await asyncio.wait({self._pending, cut}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                cut.cancel()
            if self._pending.done():
                message, self._pending = self._pending.result(), None
                return message
        return {"type": "websocket.disconnect", "code": GOING_AWAY}

    async def send(self, message: dict) -> None:
        async with self._lock:
            if self.cut.is_set():
                return  # closed by the drain: the app's later frames go nowhere
            kind = message.get("type")
            self.accepted |= kind == "websocket.accept"
            self.finished |= kind == "websocket.close"
            await self._send(message)

    async def close(self) -> bool:
        """Send the ``shutting_down`` error and close 1001 (if the app has not closed it)."""
        async with self._lock:
            if self.finished or self.cut.is_set():
                return False
            self.cut.set()
            try:
                if self.accepted:
                    await self._send({"type": "websocket.send",
                                      "text": json.dumps({"type": "error", "error": SHUTTING_DOWN})})
                await self._send({"type": "websocket.close", "code": GOING_AWAY,
                                  "reason": "server shutting down"})
            except Exception:  # noqa: BLE001 - the client may be gone already
                pass
            return True

    def release(self) -> None:
        if self._pending is not None:
            self._pending.cancel()


class Connections:
    """The open HTTP requests and WebSocket streams of one ingress replica, and its drain."""

    def __init__(self) -> None:
        self.requests: dict[int, asyncio.Task] = {}
        self.streams: dict[int, _Stream] = {}
        self.deadline: float | None = None  # loop time at which the drain window ends

    @property
    def draining(self) -> bool:
        return self.deadline is not None

    async def drain(self, window_s: float) -> dict[str, Any]:
        """Refuse new work; wait up to ``window_s`` (from the first call) for what is in flight;
        then close the streams left (1001) and cancel the requests left (503)."""
        loop = asyncio.get_running_loop()
        if self.deadline is None:
            self.deadline = loop.time() + max(0.0, window_s)
        open_streams, open_requests = len(self.streams), len(self.requests)
        while (self.streams or self.requests) and loop.time() < self.deadline:
            await asyncio.sleep(0.1)
        closed = 0
        for stream in list(self.streams.values()):
            closed += await stream.close()
        cancelled = sum(task.cancel() for task in list(self.requests.values()))
        settle = loop.time() + 2.0  # the stream sessions see their disconnect and return
        while (self.streams or self.requests) and loop.time() < settle:
            await asyncio.sleep(0.05)
        return {"pid": os.getpid(), "streams_open": open_streams, "requests_open": open_requests,
                "streams_closed": closed, "requests_cancelled": cancelled,
                "left": len(self.streams) + len(self.requests)}


async def _refuse(scope: dict, receive: Any, send: Any) -> None:
    """A request or stream arriving while the replica drains: 503 / close 1001."""
    if scope["type"] == "http":
        body = json.dumps({"error": SHUTTING_DOWN}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", b"5"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
        return
    message = await receive()
    if message.get("type") == "websocket.connect":
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps({"type": "error", "error": SHUTTING_DOWN})})
        await send({"type": "websocket.close", "code": GOING_AWAY, "reason": "server shutting down"})


class DrainMiddleware:
    """ASGI middleware: tracks requests and streams in :class:`Connections`; refuses new ones
    while the replica drains."""

    def __init__(self, app: Any, connections: Connections) -> None:
        self.app, self.connections = app, connections

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind, conns = scope["type"], self.connections
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
        elif conns.draining:
            await _refuse(scope, receive, send)
        elif kind == "http":
            await self._request(scope, receive, send)
        else:
            stream = _Stream(receive, send)
            conns.streams[id(stream)] = stream
            try:
                await self.app(scope, stream.receive, stream.send)
            finally:
                conns.streams.pop(id(stream), None)
                stream.release()

    async def _request(self, scope: dict, receive: Any, send: Any) -> None:
        started = False

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started |= message.get("type") == "http.response.start"
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, tracked_send))
        self.connections.requests[id(task)] = task
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():  # this call was cancelled (the client left): pass it on
                task.cancel()
                raise
            if not started:  # cancelled by the drain before it answered
                await _refuse({"type": "http"}, receive, send)
        finally:
            self.connections.requests.pop(id(task), None)


# -- the driver side (the `disenttalk serve` process) --------------------------------------------
def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def catch_stop_signals() -> None:
    """SIGTERM ends the serving loop as Ctrl-C does: a KeyboardInterrupt in the main thread
    (``ray.init`` installs its own SIGTERM handler, an abrupt exit; call this after it)."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def drain_ingress(app_name: str, window_s: float) -> list[dict[str, Any]]:
    """Drain every running Ingress replica of ``app_name`` (a call returns once its replica is
    drained); the calls' reports. Handle calls go to any replica, so they are repeated until each
    has answered (a replica's streams are closed by one call, so the counts add up)."""
    from ray import serve

    try:
        app = serve.status().applications.get(app_name)
    except Exception:  # noqa: BLE001 - Serve is not up (an interrupted start): nothing to drain
        return []
    deployment = app.deployments.get("Ingress") if app is not None else None
    if deployment is None:
        return []
    expected = max(1, int(deployment.replica_states.get("RUNNING", 0)))
    handle = serve.get_deployment_handle("Ingress", app_name)
    give_up = time.monotonic() + window_s + 10.0
    replicas: set[str] = set()
    calls_made: list[dict[str, Any]] = []
    while len(replicas) < expected and time.monotonic() < give_up:
        calls = [handle.drain.remote(window_s) for _ in range(2 * (expected - len(replicas)))]
        for call in calls:
            try:
                report = call.result(timeout_s=max(1.0, give_up - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - a replica that cannot answer is stopped anyway
                _say(f"drain: an Ingress replica did not answer ({type(exc).__name__})")
                continue
            replicas.add(str(report.get("replica")))
            calls_made.append(report)
    return calls_made


def _proc_stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time in clock ticks, state) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19]), fields[0]


def descendants(root: int) -> dict[int, int]:
    """Every process below ``root`` in the process tree: {pid: start time} (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and (stat := _proc_stat(child)) is not None:
                found[child] = stat[1]
                todo.append(child)
    return found


def still_running(procs: dict[int, int]) -> list[int]:
    """The processes of ``procs`` that still run (same pid and start time, not a zombie)."""
    alive = []
    for pid, started in procs.items():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] == started and stat[2] != "Z":
            alive.append(pid)
    return alive


def reap(procs: dict[int, int], timeout_s: float) -> list[int]:
    """Wait up to ``timeout_s`` for ``procs`` to exit, then SIGTERM and, 2 s later, SIGKILL the
    ones left; returns the pids that had to be signalled."""
    deadline = time.monotonic() + timeout_s
    while still_running(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = still_running(procs)
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 1.0)):
        for pid in still_running(procs):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        end = time.monotonic() + wait
        while still_running(procs) and time.monotonic() < end:
            time.sleep(0.05)
    return left


def _say(message: str) -> None:
    print(f"disenttalk serve: {message}", file=sys.stderr, flush=True)


def stop(app_name: str, grace_s: float, started_ray: bool) -> None:
    """Drain the app, then stop Ray (a local cluster this process started) or Serve (a cluster
    reached by ``RAY_ADDRESS``), within about ``grace_s``; see the module docstring."""
    t0 = time.monotonic()
    window = max(1.0, grace_s - STOP_RESERVE_S)
    _say(f"stopping: requests and streams in flight get up to {window:g} s")
    try:
        reports = drain_ingress(app_name, window)
        replicas = len({r.get("replica") for r in reports})
        closed = sum(r.get("streams_closed", 0) for r in reports)
        cancelled = sum(r.get("requests_cancelled", 0) for r in reports)
        _say(f"drained {replicas} ingress replica(s) in {time.monotonic() - t0:.1f} s; {closed} "
             f"stream(s) closed 1001, {cancelled} request(s) answered 503")
    except KeyboardInterrupt:
        _say("second signal: drain cut short")
    except Exception as exc:  # noqa: BLE001 - stopping goes on whatever the drain did
        _say(f"drain failed ({type(exc).__name__}: {exc}); stopping anyway")
    for sig in (signal.SIGTERM, signal.SIGINT):  # half a Ray shutdown would leave processes behind
        signal.signal(sig, signal.SIG_IGN)
    import ray

    procs = descendants(os.getpid())  # Ray's processes (and theirs) started from here
    if not started_ray and ray.is_initialized():  # a cluster of its own: take the app off it
        from ray import serve

        serve.shutdown()
    ray.shutdown()  # a local cluster started here goes with it
    wait = max(0.5, grace_s - (time.monotonic() - t0) - 3.5)
    if killed := reap(procs, wait):
        _say(f"{len(killed)} process(es) left behind by Ray were stopped: {sorted(killed)}")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _say(f"stopped in {time.monotonic() - t0:.1f} s")
