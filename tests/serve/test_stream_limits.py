"""/v1/stream under hostile and unlucky clients: bursts, foreign pages, trickles, idling, too many
streams, a reader that fails, a generator replica that dies; and state that stays off the GPU.

The first tests need no Ray (fake socket and handles); the rest run one app for the whole module
with two generator replicas and short session limits (see :func:`app_config`).
"""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import requests

from tests.serve.conftest import MODEL, SR, TINY

TIMEOUT = 120
IDLE_S, START_S, SESSION_S, AHEAD_S = 3, 2, 10, 4.0


# -- no Ray: state, origins, caps, the session with fake handles ------------------------------
def _tensors(value) -> list[str]:
    """Paths to the torch tensors inside ``value`` (dicts, lists, tuples)."""
    import torch

    if isinstance(value, torch.Tensor):
        return ["."]
    if isinstance(value, dict):
        return [f"{k}{p}" for k, v in value.items() for p in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [f"[{i}]{p}" for i, v in enumerate(value) for p in _tensors(v)]
    return []


def test_stream_state_is_cpu_data_and_returns_to_the_generators_device():
    import torch

    from disenttalk.generate import MotionStream
    from serve.stream import attach, detach

    stream = MotionStream.__new__(MotionStream)
    stream.__dict__.update(gen=object(), settings=object(), plan=None, fps=25.0, sample_rate=SR,
                           _audio=np.ones(640, np.float32), _offset=640, _index=3,
                           _tail=torch.randn(8, 5), _done=False, whole=torch.zeros(4, 2))
    state = detach(stream)
    assert _tensors(state) == [] and "gen" not in state and "settings" not in state
    assert np.array_equal(state["_tail"], stream._tail.numpy())
    fresh = MotionStream.__new__(MotionStream)
    fresh.gen = SimpleNamespace(device=torch.device("cpu"))
    back = attach(state, fresh)
    assert isinstance(back._tail, torch.Tensor) and back._tail.device == torch.device("cpu")
    assert torch.equal(back._tail, stream._tail) and back._index == 3 and back._offset == 640


def test_origins_allow_the_own_page_and_loopback_unless_listed():
    from serve.origins import origin_allowed

    host = "10.0.0.5:8000"
    assert origin_allowed(None, host, None)  # not a browser
    assert origin_allowed("http://10.0.0.5:8000", host, None)  # the server's own page
    assert origin_allowed("http://localhost:5173", host, None)
    assert origin_allowed("http://[::1]:3000", host, None)
    for foreign in ("http://evil.example", "null", "file://", "http://127.0.0.1.evil.example"):
        assert not origin_allowed(foreign, host, None), foreign
    listed = ["https://app.example.com"]
    assert origin_allowed("https://app.example.com/", host, listed)
    assert origin_allowed("http://10.0.0.5:8000", host, listed)
    assert not origin_allowed("http://localhost:5173", host, listed)
    assert origin_allowed("https://any.example", host, ["*"])


def test_stream_caps_per_replica_and_per_client():
    from serve.stream.admission import Admission

    opts = SimpleNamespace(max_streams=3, max_streams_per_client=2)
    caps = Admission()
    assert caps.enter("a", opts) is None and caps.enter("a", opts) is None
    assert caps.enter("a", opts).code == "too_many_streams"
    assert caps.enter("b", opts) is None
    assert caps.enter("c", opts).status == 503  # the replica's cap
    caps.leave("a")
    assert caps.enter("c", opts) is None and caps.open == 3


class FakeSocket:
    """What the session uses of Starlette's WebSocket; ``script`` is what the client sends."""

    def __init__(self, script: list, headers: dict | None = None) -> None:
        self.script, self.headers = list(script), headers or {}
        self.client = SimpleNamespace(host="127.0.0.1")
        self.out: list = []
        self.closed: tuple[int, str] | None = None

    async def accept(self) -> None:
        pass

    async def receive(self) -> dict:
        if not self.script:
            await asyncio.sleep(3600)
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        key = "bytes" if isinstance(item, bytes) else "text"
        return {"type": "websocket.receive", key: item if key == "bytes" else json.dumps(item)}

    async def send_text(self, text: str) -> None:
        self.out.append(json.loads(text))

    async def send_bytes(self, data: bytes) -> None:
        self.out.append(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def frames(self) -> list[int]:
        return [int(m.decode()) for m in self.out if isinstance(m, bytes)]


class FakeAnimator:
    """Stream steps as a generator replica gives them: one frame per 640 samples (25 fps at 16 kHz),
    each window's frames, then the state. ``die`` lists calls (1, 2, ...) that lose the replica
    after their first window."""

    def __init__(self, die: tuple[int, ...] = ()) -> None:
        self.die, self.calls, self.seen_portrait = die, 0, False
        self.stream_open = SimpleNamespace(remote=self._open)
        self.stream_step = SimpleNamespace(remote=self._step)

    def options(self, stream: bool = False) -> FakeAnimator:
        return self

    async def _open(self, start) -> dict:
        ready = {"type": "ready", "fps": 25.0, "hop_frames": 8}
        return {"stream": {"samples": 0}, "start": start.model_dump(), "frames": 0, "ready": ready}

    async def _step(self, state, audio, final, portrait, portrait_id):
        self.calls += 1
        if portrait is None and not self.seen_portrait:
            yield {"need_portrait": True}
            return
        self.seen_portrait = True
        samples = state["stream"]["samples"] + len(audio)
        end = -(-samples // 640) if final else samples // 640
        first = state["frames"]
        for lo in range(first, end, 8):
            yield {"frames": [(i, str(i).encode()) for i in range(lo, min(lo + 8, end))]}
            if self.calls in self.die:
                self.seen_portrait = False  # a new replica
                from ray.exceptions import ActorDiedError

                raise ActorDiedError()
        yield {"state": {**state, "stream": {"samples": samples}, "frames": end}}


def _backend(animator: FakeAnimator, **stream: float):
    from serve.config import ServeConfig

    async def portrait(pid):
        return "the portrait"

    cfg = ServeConfig.from_dict({"stream": {"ahead_s": 100.0, **stream}})
    return SimpleNamespace(cfg=cfg, api_key=None, key_ok=lambda key: False, animator=animator,
                           portraits=SimpleNamespace(get=SimpleNamespace(remote=portrait)))


def _session(script: list, animator: FakeAnimator, **stream: float) -> FakeSocket:
    from serve.stream import run_session

    ws = FakeSocket(script)
    asyncio.run(asyncio.wait_for(run_session(ws, _backend(animator, **stream)), 30))
    return ws


START = {"type": "start", "portrait_id": "a" * 64, "sample_rate": SR, "stats": True}
AUDIO = [b"\x00\x00" * 3200] * 10  # 2 s in 200 ms messages: 50 frames


def test_a_step_whose_replica_died_runs_again_and_the_frames_come_once():
    ws = _session([START, *AUDIO, {"type": "end"}], FakeAnimator(die=(3,)))
    assert ws.closed[0] == 1000 and ws.frames() == list(range(50))
    assert ws.out[-1]["frames"] == 50 and ws.out[-1]["stats"]["retries"] == 1
    lost_twice = _session([START, *AUDIO, {"type": "end"}], FakeAnimator(die=(3, 4, 5)))
    assert lost_twice.closed[0] == 1013 and lost_twice.out[-1]["error"]["code"] == "replica_unavailable"


def test_a_reader_that_raises_ends_the_session_with_an_error_close():
    ws = _session([START, AUDIO[0], RuntimeError("the reader broke")], FakeAnimator())
    assert ws.closed[0] == 1011 and ws.out[-1]["error"]["code"] == "internal_error"


def test_audio_far_ahead_of_real_time_closes_4413_and_a_step_carries_one_hop():
    ws = _session([START, *AUDIO * 4], FakeAnimator(), max_buffer_s=5.0)  # 8 s at once
    assert ws.closed[0] == 4413 and ws.out[-1]["error"]["code"] == "audio_too_fast"
    ok = _session([START, *AUDIO, {"type": "end"}], FakeAnimator())
    stats = ok.out[-1]["stats"]
    assert stats["most_step_samples"] <= stats["hop_samples"] == 5120 and stats["steps"] >= 7


# -- one app with short session limits ------------------------------------------------------
@pytest.fixture(scope="module")
def app_config(registered):
    """The tests' app: two generator replicas, short stream timeouts, 4 s of audio ahead of real
    time (an 8 s burst takes 4 s), two streams per client."""
    from serve.app import load

    return load(None, [f"model_uri=models:/{MODEL}@champion", *TINY, "generator.num_replicas=2",
                       "limits.max_stream_s=20", f"stream.idle_timeout_s={IDLE_S}",
                       f"stream.start_timeout_s={START_S}", f"stream.max_session_s={SESSION_S}",
                       f"stream.ahead_s={AHEAD_S}", "stream.max_streams_per_client=2"])


@pytest.fixture(scope="module")
def portrait_id(server, portrait_png) -> str:
    r = requests.post(f"{server}/v1/portraits", files={"image": ("a.png", portrait_png)}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()["portrait_id"]


def _closed(ws, seconds: float) -> tuple[int, str, list]:
    """Read until the server closes: (close code, the error's code, the messages before it)."""
    from websockets.exceptions import ConnectionClosed

    got, error, deadline = [], "", time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            msg = ws.recv(timeout=seconds)
            got.append(msg)
            if isinstance(msg, str) and json.loads(msg).get("type") == "error":
                error = json.loads(msg)["error"]["code"]
    except ConnectionClosed as exc:
        return exc.rcvd.code, error, got
    raise AssertionError("not closed")


@pytest.mark.ray
def test_a_burst_of_8_s_is_generated_a_hop_a_step_and_every_frame_arrives(server, portrait_id):
    from serve.client import stream
    from tests.ray.conftest import tone

    audio = tone(8.0)
    result = stream(server, portrait_id, audio, SR, chunk_ms=200, realtime=False, stats=True,
                    timeout=TIMEOUT)
    assert result.error is None and result.close_code == 1000, result.error
    assert [h["index"] for h, _, _ in result.frames] == list(range(200)) and result.end["frames"] == 200
    assert result.frames[-1][0]["audio"] == [len(audio) - SR // 25, len(audio)]
    stats = result.end["stats"]
    assert stats["most_step_samples"] <= stats["hop_samples"] == 8 * SR // 25
    assert stats["steps"] >= 200 // 8 and stats["retries"] == 0
    assert result.ready["limits"]["ahead_s"] == AHEAD_S


@pytest.mark.ray
def test_pages_of_a_foreign_origin_are_refused(server, portrait_id, portrait_png):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    from serve.client import ws_url

    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server), origin="http://evil.example", open_timeout=30)
    assert refused.value.response.status_code == 403
    with connect(ws_url(server), origin=server, open_timeout=30) as ws:  # the page's own origin
        ws.send(json.dumps({"type": "start", "portrait_id": portrait_id, "sample_rate": SR}))
        assert json.loads(ws.recv(timeout=TIMEOUT))["type"] == "ready"

    def upload(origin: str) -> requests.Response:
        return requests.post(f"{server}/v1/portraits", files={"image": ("a.png", portrait_png)},
                             headers={"Origin": origin}, timeout=TIMEOUT)

    foreign = upload("http://evil.example")
    assert foreign.status_code == 403 and foreign.json()["error"]["code"] == "forbidden_origin"
    assert upload(server).status_code == 200 and upload("http://localhost:5173").status_code == 200


@pytest.mark.ray
def test_a_trickling_client_is_closed_at_the_session_deadline(server, portrait_id):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from serve.client import ws_url

    with connect(ws_url(server), open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start", "portrait_id": portrait_id, "sample_rate": SR}))
        assert json.loads(ws.recv(timeout=TIMEOUT))["type"] == "ready"
        opened, error = time.monotonic(), ""
        try:
            while time.monotonic() - opened < SESSION_S + 60:
                ws.send(b"\x00\x00" * 160)  # 10 ms a second: never idle, never done
                try:
                    msg = ws.recv(timeout=1)
                except TimeoutError:
                    continue
                if isinstance(msg, str) and json.loads(msg).get("type") == "error":
                    error = json.loads(msg)["error"]["code"]
        except ConnectionClosed as exc:
            code = exc.rcvd.code
    assert (code, error) == (4408, "session_timeout")
    assert time.monotonic() - opened >= SESSION_S - 1


@pytest.mark.ray
def test_a_silent_client_is_closed_4408(server, portrait_id):
    from websockets.sync.client import connect

    from serve.client import ws_url

    with connect(ws_url(server), open_timeout=30) as ws:  # no start message
        assert _closed(ws, START_S + 30)[:2] == (4408, "start_timeout")
    with connect(ws_url(server), open_timeout=30) as ws:  # started, then no audio
        ws.send(json.dumps({"type": "start", "portrait_id": portrait_id, "sample_rate": SR}))
        code, error, got = _closed(ws, IDLE_S + 30)
        assert (code, error) == (4408, "idle_timeout") and json.loads(got[0])["type"] == "ready"


@pytest.mark.ray
def test_streams_past_the_cap_get_1013(server, portrait_id):
    from websockets.sync.client import connect

    from serve.client import ws_url

    start = json.dumps({"type": "start", "portrait_id": portrait_id, "sample_rate": SR})
    held = [connect(ws_url(server), open_timeout=30) for _ in range(2)]
    try:
        for ws in held:
            ws.send(start)
            assert json.loads(ws.recv(timeout=TIMEOUT))["type"] == "ready"
        with connect(ws_url(server), open_timeout=30) as third:
            assert _closed(third, 30)[:2] == (1013, "too_many_streams")
    finally:
        for ws in held:
            ws.close()
    deadline = time.monotonic() + 30  # the server counts a stream until its session has ended
    while True:
        with connect(ws_url(server), open_timeout=30) as again:
            again.send(start)
            first = json.loads(again.recv(timeout=TIMEOUT))
        if first["type"] == "ready" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert first["type"] == "ready", first


def _generators() -> list:
    """The generator replicas' actors that answer now."""
    import ray

    alive = []
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["name"].startswith("SERVE_REPLICA::disenttalk#Animator#"):
            try:
                actor = ray.get_actor(a["name"], namespace="serve")
                alive.append((actor, ray.get(actor.get_num_ongoing_requests.remote(), timeout=10)))
            except Exception:  # noqa: BLE001 - gone since the listing
                continue
    return alive


def _kill_a_busy_generator(deadline: float) -> None:
    """Kill the generator replica running a request (a stream step)."""
    import ray

    while time.monotonic() < deadline:
        for actor, ongoing in _generators():
            if ongoing > 0:
                ray.kill(actor, no_restart=True)
                return
        time.sleep(0.01)
    raise AssertionError("no generator replica ran a step")


@pytest.mark.ray
def test_a_generator_replica_killed_mid_stream_costs_no_frame(server, portrait_id):
    """Steps of 100 DDIM steps, so the kill lands in one far more often than between two; when
    it lands between two the stream has nothing to retry, and it is tried again (up to three
    times) once both generator replicas answer."""
    import threading

    from serve.client import stream
    from tests.ray.conftest import tone

    audio, retries = tone(6.0), []
    for _ in range(3):
        deadline = time.monotonic() + TIMEOUT
        while len(_generators()) < 2:  # the replica killed before has been replaced
            assert time.monotonic() < deadline, "the killed generator replica was not replaced"
            time.sleep(0.5)
        result, going = {}, threading.Event()

        def run(result: dict = result, going: threading.Event = going) -> None:
            result["r"] = stream(server, portrait_id, audio, SR, chunk_ms=200, realtime=False, stats=True,
                                 steps=100, timeout=TIMEOUT, on_frame=lambda n: n >= 40 and going.set())

        client = threading.Thread(target=run)
        client.start()
        assert going.wait(TIMEOUT), "no frames"
        _kill_a_busy_generator(time.monotonic() + 30)
        client.join(TIMEOUT)
        r = result["r"]
        assert r.error is None and r.close_code == 1000, r.error
        assert [h["index"] for h, _, _ in r.frames] == list(range(150)) and r.end["frames"] == 150
        retries.append(r.end["stats"]["retries"])
        if retries[-1]:
            break
    assert retries[-1] == 1 and all(n == 0 for n in retries[:-1]), retries
