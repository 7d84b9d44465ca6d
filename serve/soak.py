"""``disenttalk bench soak``: a running server under steady mixed load, hostile input and chaos.

For ``--minutes N`` it drives the server with ``/v1/generate`` (audio and typed text), real-time
streams (PCM16 paced at real time, :mod:`serve.client`), portrait uploads and a steady share of
bad and hostile requests (:mod:`serve.soak_cases`); with ``--chaos`` it also kills a generator
(Animator) replica and a Portraits replica in turn on a schedule, through Ray's API on the
server's cluster (``RAY_ADDRESS``: ``disenttalk serve`` prints it). Every minute it prints one
JSON line: requests by kind and status, p50/p95 latency of what succeeded, streams completed or
closed (by close code), hostile cases and what they got, and the RSS of every Serve replica
(pids from Ray's State API when the dashboard runs, else the ``ray::ServeReplica`` processes on
this machine; RSS from /proc). Then a summary line.

Exit status 1 when any answer was a 5xx other than 503, a request of the normal load got no
answer at all, or a stream ended with a close code the API does not document (1011 and an
abnormal close included); what hostile cases got is reported against the contract, not judged.
"""

from __future__ import annotations

import io
import json
import statistics
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import typer

from serve.shutdown import GOING_AWAY

# close codes the API documents (serve.stream.CLOSE, the shutdown's 1001), 1011 excepted
BASE_CLOSE = frozenset({1000, GOING_AWAY, 1003, 1008, 1009, 1013, 4400, 4401, 4403, 4404, 4408,
                        4413, 4422})
NO_ANSWER = "no_answer"  # a request that got no HTTP status (connection refused, reset, timeout)


def documented_close_codes() -> frozenset[int]:
    """:data:`BASE_CLOSE` and every code of ``serve.stream.CLOSE`` but 1011 (internal error)."""
    try:
        from serve.stream import CLOSE

        return frozenset(BASE_CLOSE | set(CLOSE.values())) - {1011}
    except ImportError:
        return BASE_CLOSE


@dataclass
class Minute:
    """What happened in one minute of the soak."""

    requests: Counter = field(default_factory=Counter)  # (kind, status) → n
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    streams: Counter = field(default_factory=Counter)  # (kind, close code) → n
    frames: Counter = field(default_factory=Counter)  # kind → frames received
    # replica → its (RSS, RSS less shared object-store pages) samples, bytes
    rss: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    events: list[str] = field(default_factory=list)


class Tally:
    """Outcomes by minute since ``t0`` (thread-safe); the per-minute report and the exit rule.

    Kinds starting ``hostile:`` are the bad and hostile cases: their statuses are reported, and
    only a 5xx other than 503 or an undocumented close among them fails the run.
    """

    def __init__(self, t0: float | None = None, documented: frozenset[int] | None = None) -> None:
        self.t0 = time.monotonic() if t0 is None else t0
        self.documented = documented_close_codes() if documented is None else documented
        self.minutes: dict[int, Minute] = defaultdict(Minute)
        self.expected: dict[str, frozenset] = {}  # hostile kind → what the contract promises
        self.last: int | None = None  # outcomes after the run's end count in its last minute
        self.lock = threading.Lock()

    def minute_of(self, t: float | None) -> int:
        minute = max(0, int(((time.monotonic() if t is None else t) - self.t0) // 60))
        return minute if self.last is None else min(minute, self.last)

    def expect(self, kind: str, outcomes: frozenset) -> None:
        self.expected[kind] = outcomes

    def request(self, kind: str, status: int | str, latency: float | None, t: float | None = None) -> None:
        with self.lock:
            m = self.minutes[self.minute_of(t)]
            m.requests[(kind, status)] += 1
            if status == 200 and latency is not None:
                m.latencies[kind].append(latency)

    def stream(self, kind: str, close_code: int | str | None, frames: int = 0, t: float | None = None) -> None:
        with self.lock:
            m = self.minutes[self.minute_of(t)]
            m.streams[(kind, close_code)] += 1
            if frames:
                m.frames[kind] += frames

    def rss(self, replica: str, rss_bytes: int, t: float | None = None, shared: int = 0) -> None:
        """A replica's RSS sample; ``shared``: the part of it that is Ray's object store
        (``RssShmem``: pages of the shared plasma file the replica has read objects from)."""
        with self.lock:
            self.minutes[self.minute_of(t)].rss[replica].append((rss_bytes, rss_bytes - shared))

    @staticmethod
    def _rss_mb(m: Minute, which: int) -> dict[str, float]:
        """Per replica, the median of the minute's samples (``which``: 0 RSS, 1 private)."""
        return {k: round(statistics.median(v[which] for v in vs) / 2**20, 1) for k, vs in sorted(m.rss.items()) if vs}

    def event(self, text: str, t: float | None = None) -> None:
        with self.lock:
            self.minutes[self.minute_of(t)].events.append(text)

    def report(self, minute: int) -> dict[str, Any]:
        """The JSON line of one minute."""
        with self.lock:
            m = self.minutes[minute]
            by_status: Counter = Counter()
            for (_, status), n in m.requests.items():
                by_status[str(status)] += n
            kinds: dict[str, dict[str, Any]] = defaultdict(dict)
            for (kind, status), n in sorted(m.requests.items(), key=str):
                kinds[kind][str(status)] = n
            for kind, values in m.latencies.items():
                kinds[kind].update(p50_s=_pct(values, 50), p95_s=_pct(values, 95))
            ok = [v for k, vs in m.latencies.items() if not k.startswith("hostile:") for v in vs]
            streams: dict[str, dict[str, int]] = defaultdict(dict)
            for (kind, code), n in sorted(m.streams.items(), key=str):
                streams[kind][str(code)] = n
            return {"minute": minute + 1, "requests": dict(by_status), "p50_s": _pct(ok, 50),
                    "p95_s": _pct(ok, 95), "by_kind": dict(kinds), "streams": dict(streams),
                    "streams_completed": m.streams[("stream", 1000)],
                    "streams_failed": sum(n for (k, c), n in m.streams.items() if k == "stream" and c != 1000),
                    "frames": dict(m.frames), "rss_mb": self._rss_mb(m, 0), "private_rss_mb": self._rss_mb(m, 1),
                    "events": list(m.events)}

    def failures(self) -> list[str]:
        """What fails the run: 5xx but 503, unanswered normal requests, undocumented closes."""
        out: Counter = Counter()
        with self.lock:
            for m in self.minutes.values():
                for (kind, status), n in m.requests.items():
                    if isinstance(status, int) and status >= 500 and status != 503:
                        out[f"{kind} answered {status}"] += n
                    elif status == NO_ANSWER and not kind.startswith("hostile:"):
                        out[f"{kind} got no answer"] += n
                for (kind, code), n in m.streams.items():
                    if isinstance(code, int) and code in self.documented:
                        continue
                    out[f"{kind} ended with close code {code} (not documented)"] += n
        return [f"{what} ×{n}" for what, n in sorted(out.items())]

    def summary(self) -> dict[str, Any]:
        """Totals, RSS growth from minute 5 (the first in runs under 6 minutes) to the end (the
        minutes' medians; RSS and private RSS, without the shared object-store pages), and
        /v1/generate successes per minute in the first third against the last third."""
        with self.lock:
            minutes = sorted(self.minutes)
            done = [sum(n for (k, s), n in self.minutes[i].requests.items()
                        if s == 200 and k.startswith("generate")) for i in minutes]
            start = 4 if len(minutes) > 5 else 0  # minute 5 (warmed up), else the first
            first, last = (self.minutes[minutes[i]] for i in (start, -1)) if minutes else (Minute(), Minute())
            growth = [_growth(self._rss_mb(first, which), self._rss_mb(last, which)) for which in (0, 1)]
        third = max(1, len(done) // 3)
        failures = self.failures()
        return {"summary": True, "minutes": len(minutes), "generate_ok_per_minute": done,
                "throughput_first_vs_last": [sum(done[:third]) / third, sum(done[-third:]) / third],
                "rss_growth_pct": growth[0], "private_rss_growth_pct": growth[1], "contract_misses": self.misses(), "failures": failures,
                "ok": not failures}

    def misses(self) -> dict[str, dict[str, int]]:
        """Hostile cases that got something other than the contract's answer: {kind: {got: n}}
        (a client still open when the soak ended, within its deadline, is none)."""
        out: dict[str, Counter] = defaultdict(Counter)
        with self.lock:
            for m in self.minutes.values():
                for (kind, outcome), n in [*m.requests.items(), *m.streams.items()]:
                    if kind in self.expected and outcome not in (*self.expected[kind], "open"):
                        out[kind][str(outcome)] += n
        return {kind: dict(got) for kind, got in sorted(out.items())}


def _growth(first: dict[str, float], last: dict[str, float]) -> dict[str, float]:
    return {r: round(100 * (last[r] - first[r]) / first[r], 1) for r in sorted(set(first) & set(last)) if first[r]}


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


# -- the load -------------------------------------------------------------------------------------
TEXT = "Hello there, it is lovely to meet you. Shall we talk for a while?"


@dataclass
class Soak:
    """The server, what is sent to it, and the run's tally and stop flag."""

    url: str
    api_key: str | None
    portrait_id: str
    photo: bytes
    speech: np.ndarray
    wav: bytes
    tally: Tally
    stop: threading.Event
    upload_mb: float = 20.0

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}


def post(soak: Soak, kind: str, path: str, fields: dict[str, Any]) -> int | str:
    """A multipart POST (``fields``: text values or (filename, bytes)); records its outcome."""
    import requests

    files = {k: v if isinstance(v, tuple) else (None, str(v)) for k, v in fields.items()}
    t0 = time.monotonic()
    try:
        status: int | str = requests.post(soak.url + path, files=files, headers=soak.headers,
                                          timeout=300).status_code
    except requests.RequestException:
        status = NO_ANSWER
    soak.tally.request(kind, status, time.monotonic() - t0)
    return status


def generate_loop(soak: Soak) -> None:
    """``/v1/generate`` back to back, alternating speech files (mp4) and typed text (motion)."""
    n = 0
    while not soak.stop.is_set():
        base = {"portrait_id": soak.portrait_id, "crop_only": "true"}
        if n % 2 == 0:
            status = post(soak, "generate_audio", "/v1/generate",
                          {**base, "output": "mp4", "audio": ("speech.wav", soak.wav)})
        else:
            status = post(soak, "generate_text", "/v1/generate", {**base, "output": "motion", "text": TEXT})
        if status != 200:
            soak.stop.wait(1.0)  # what Retry-After asks for
        n += 1


def stream_loop(soak: Soak) -> None:
    """Real-time streams of the speech, one after another (200 ms PCM16 chunks)."""
    from serve.client import stream

    while not soak.stop.is_set():
        try:
            result = stream(soak.url, soak.portrait_id, soak.speech, chunk_ms=200, realtime=True,
                            api_key=soak.api_key, timeout=60)
        except Exception as exc:  # noqa: BLE001 - the connection failed: an outcome like any other
            soak.tally.stream("stream", f"error:{type(exc).__name__}")
            soak.stop.wait(1.0)
            continue
        if result.http_status is not None:
            soak.tally.request("stream_handshake", result.http_status, None)
        else:
            soak.tally.stream("stream", result.close_code, len(result.frames))
        if result.close_code != 1000:
            soak.stop.wait(1.0)


def portrait_loop(soak: Soak, every_s: float = 10.0) -> None:
    """A portrait upload (one of four variants of the photo) and a lookup by id every ``every_s``."""
    import requests
    from PIL import Image, ImageOps

    photo = Image.open(io.BytesIO(soak.photo)).convert("RGB")
    variants = []
    for image in (photo, ImageOps.mirror(photo), photo.crop((0, 0, photo.width, photo.height * 9 // 10)),
                  ImageOps.autocontrast(photo)):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        variants.append(buf.getvalue())
    k = 0
    while not soak.stop.wait(every_s):
        post(soak, "portrait_upload", "/v1/portraits", {"image": ("photo.png", variants[k % len(variants)])})
        t0 = time.monotonic()
        try:
            status: int | str = requests.get(f"{soak.url}/v1/portraits/{soak.portrait_id}",
                                             headers=soak.headers, timeout=60).status_code
        except requests.RequestException:
            status = NO_ANSWER
        soak.tally.request("portrait_get", status, time.monotonic() - t0)
        k += 1


def run_case(soak: Soak, case: Any) -> None:
    """One hostile case; its outcome under ``hostile:<name>``."""
    t0 = time.monotonic()
    try:
        how, outcome = case.run(soak)
    except Exception as exc:  # noqa: BLE001 - e.g. a reset connection: reported, not fatal
        how, outcome = "http", f"error:{type(exc).__name__}"
    kind = f"hostile:{case.name}"
    soak.tally.expect(kind, case.expected)
    if how == "ws" and outcome != "open":
        soak.tally.stream(kind, outcome)
    else:
        soak.tally.request(kind, outcome, time.monotonic() - t0)


def hostile_loop(soak: Soak, every_s: float) -> None:
    from serve.soak_cases import cases

    rotation = cases(soak)
    k = 0
    while not soak.stop.wait(every_s):
        run_case(soak, rotation[k % len(rotation)])
        k += 1


def long_case_loop(soak: Soak, case: Any) -> None:
    while not soak.stop.is_set():
        run_case(soak, case)
        soak.stop.wait(2.0)


def open_soak(url: str, api_key: str | None, seconds: float, upload_mb: float) -> Soak:
    """Upload the portrait and build what the load sends (the bench's photo and speech)."""
    import requests
    from scipy.io import wavfile

    from disenttalk.constants import SAMPLE_RATE
    from serve.bench import bench_inputs

    photo, speech = bench_inputs(None, None, seconds)
    buf = io.BytesIO()
    wavfile.write(buf, SAMPLE_RATE, (np.clip(speech, -1, 1) * 32767).astype(np.int16))
    headers = {"X-API-Key": api_key} if api_key else {}
    r = requests.post(f"{url}/v1/portraits", files={"image": ("photo.png", photo)}, headers=headers, timeout=300)
    if r.status_code != 200:
        raise typer.BadParameter(f"{url}/v1/portraits answered {r.status_code}: {r.text[:300]}")
    return Soak(url, api_key, r.json()["portrait_id"], photo, speech, buf.getvalue(), Tally(),
                threading.Event(), upload_mb)


def _workers(s: Soak, generate_clients: int, stream_clients: int, hostile_every: float,
             app: str, state_api: bool, chaos: tuple[float, float] | None) -> list[tuple[Any, tuple]]:
    from serve import soak_ray
    from serve.soak_cases import LONG_CASES

    workers: list[tuple[Any, tuple]] = [(generate_loop, (s,))] * generate_clients
    workers += [(stream_loop, (s,))] * stream_clients
    workers += [(portrait_loop, (s,)), (hostile_loop, (s, hostile_every))]
    workers += [(long_case_loop, (s, case)) for case in LONG_CASES]
    workers.append((soak_ray.rss_loop, (s, app, state_api)))
    if chaos is not None:
        workers.append((soak_ray.chaos_loop, (s, app, *chaos)))
    return workers


def soak(
    url: str = typer.Option("http://127.0.0.1:8000", help="Base URL of a running app (disenttalk serve)."),
    minutes: float = typer.Option(30.0, help="How long to run; a report line per minute."),
    chaos: bool = typer.Option(False, help="Kill an Animator and a Portraits replica in turn (needs RAY_ADDRESS)."),
    api_key: str | None = typer.Option(None, help="The server's API key (default: DISENTTALK_API_KEY)."),
    ray_address: str | None = typer.Option(None, help="The server's Ray cluster (default: RAY_ADDRESS; "
                                           "disenttalk serve prints it): replica pids, --chaos."),
    generate_clients: int = typer.Option(1, help="Concurrent /v1/generate clients."),
    stream_clients: int = typer.Option(1, help="Concurrent real-time streams."),
    seconds: float = typer.Option(3.0, help="Speech per generate request and per stream."),
    hostile_every: float = typer.Option(5.0, help="Seconds between hostile requests (a rotation of cases)."),
    chaos_first: float = typer.Option(30.0, help="Seconds before the first kill."),
    chaos_every: float = typer.Option(60.0, help="Seconds between kills."),
    upload_mb: float = typer.Option(20.0, help="The server's limits.max_upload_mb (sizes the oversized upload)."),
    app_name: str = typer.Option("disenttalk", help="Serve application name."),
) -> None:
    """Soak a running server: mixed load, hostile requests, optional chaos; a JSON line a minute.
    Exits 1 on a 5xx other than 503, an unanswered request or an undocumented stream close."""
    import os

    from serve import soak_ray

    api_key = api_key or os.environ.get("DISENTTALK_API_KEY") or None
    ray_address = ray_address or os.environ.get("RAY_ADDRESS") or None
    if chaos and not ray_address:
        raise typer.BadParameter("--chaos kills replicas through the server's Ray cluster: set RAY_ADDRESS "
                                 "(disenttalk serve prints it) or --ray-address")
    if ray_address:
        os.environ["RAY_ADDRESS"] = ray_address  # the State API's too (one of several local clusters)
        soak_ray.use_token_auth()  # before ray is imported
    s = open_soak(url.rstrip("/"), api_key, seconds, upload_mb)
    state_api = False
    if ray_address:
        soak_ray.connect(ray_address)
        state_api = soak_ray.state_api_up()
    emit({"soak": s.url, "minutes": minutes, "chaos": chaos, "replica_pids": "state_api" if state_api else "proc",
          "documented_close_codes": sorted(s.tally.documented)})
    rounds = max(1, int(np.ceil(minutes)))
    s.tally.t0, s.tally.last = time.monotonic(), rounds - 1
    threads = soak_ray.start_threads(_workers(s, generate_clients, stream_clients, hostile_every, app_name,
                                              state_api, (chaos_first, chaos_every) if chaos else None))
    for m in range(rounds - 1):
        time.sleep(max(0.0, s.tally.t0 + 60 * (m + 1) - time.monotonic()))
        emit(s.tally.report(m))
    time.sleep(max(0.0, s.tally.t0 + 60 * minutes - time.monotonic()))
    s.stop.set()
    give_up = time.monotonic() + 90
    for thread in threads:
        thread.join(max(0.1, give_up - time.monotonic()))
    emit(s.tally.report(rounds - 1))
    summary = s.tally.summary()
    emit(summary)
    if not summary["ok"]:
        raise typer.Exit(1)

