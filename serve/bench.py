"""``disenttalk bench serve`` and ``disenttalk bench generate``: serving benchmarks.

``serve`` load-tests a running app over HTTP and WebSocket (latency, throughput, 503s, stream
first-frame latency and frames/s); ``generate`` times one replica's work in process (model
loaded, portrait prepared). Both print JSON lines with measured figures, never asserted in tests.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import typer

from disenttalk.constants import CHAMPION_URI, DEFAULT_STEPS, SAMPLE_RATE


def bench_inputs(image: str | None, audio: str | None, seconds: float) -> tuple[bytes, np.ndarray]:
    """(photo bytes, speech float32 16 kHz): the files given, else the astronaut and a warbling tone."""
    import io

    if image:
        photo = open(image, "rb").read()  # noqa: SIM115 - the user's own file, read once
    else:
        from PIL import Image
        from skimage import data

        buf = io.BytesIO()
        Image.fromarray(data.astronaut()).save(buf, format="PNG")
        photo = buf.getvalue()
    if audio:
        from disenttalk import media

        speech = media.read_audio(audio)
    else:
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2  # syllable-like loudness
        speech = (0.3 * envelope * np.sin(2 * np.pi * (180 + 60 * np.sin(2 * np.pi * 4 * t)) * t))
    return photo, speech.astype(np.float32)


REALTIME_FPS = 24.5  # a stream keeps up when it delivers 25 frames/s within 2 %


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class ReplicaWatch:
    """Polls ``serve.status()`` for one deployment's running replicas (needs a Ray connection)."""

    def __init__(self, app_name: str, deployment: str, address: str) -> None:
        import threading

        import ray

        ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
        self.app, self.deployment, self.samples = app_name, deployment, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from ray import serve

        t0 = time.perf_counter()
        while not self._stop.is_set():
            try:
                dep = serve.status().applications[self.app].deployments[self.deployment]
                running = int(dep.replica_states.get("RUNNING", 0))
                self.samples.append((round(time.perf_counter() - t0, 1), running))
            except Exception:  # noqa: BLE001 - a missed sample is not a failure
                pass
            self._stop.wait(1.0)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        counts = [n for _, n in self.samples]
        changes = [s for i, s in enumerate(self.samples) if i == 0 or s[1] != self.samples[i - 1][1]]
        return {"replicas_min": min(counts, default=None), "replicas_max": max(counts, default=None),
                "replicas_final": counts[-1] if counts else None, "replica_changes": changes}


@dataclass(frozen=True)
class Target:
    """A running app, the portrait uploaded to it and the speech sent to it."""

    url: str
    headers: dict[str, str]
    api_key: str | None
    portrait_id: str
    speech: np.ndarray
    wav: bytes


def connect(url: str, image: str | None, audio: str | None, seconds: float) -> Target:
    """Upload the portrait, print the served model, and return what the load phases send."""
    import io
    import os

    import requests
    from scipy.io import wavfile

    key = os.environ.get("DISENTTALK_API_KEY")
    headers = {"X-API-Key": key} if key else {}
    photo, speech = bench_inputs(image, audio, seconds)
    buf = io.BytesIO()
    wavfile.write(buf, SAMPLE_RATE, (np.clip(speech, -1, 1) * 32767).astype(np.int16))
    r = requests.post(f"{url}/v1/portraits", files={"image": ("photo", photo)}, headers=headers, timeout=300)
    if r.status_code != 200:
        raise typer.BadParameter(f"{url}/v1/portraits answered {r.status_code}: {r.text[:300]}")
    model = requests.get(f"{url}/v1/model", headers=headers, timeout=60).json()
    emit(url=url, model=model.get("uri"), version=model.get("version"), device=model.get("device"),
         audio_s=round(len(speech) / SAMPLE_RATE, 2))
    return Target(url, headers, key, r.json()["portrait_id"], speech, buf.getvalue())


def generate_load(target: Target, clients: int, total: int, fields: dict[str, str]) -> None:
    """``total`` ``/v1/generate`` requests from ``clients`` threads: latency, throughput, 503s."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    def one(_: int) -> tuple[int, float, int]:
        t0 = time.perf_counter()
        resp = requests.post(f"{target.url}/v1/generate", files={"audio": ("speech.wav", target.wav)},
                             data=fields, headers=target.headers, timeout=600)
        frames = int(resp.headers.get("x-frames", 0)) if resp.status_code == 200 else 0
        return resp.status_code, time.perf_counter() - t0, frames

    one(0)  # warm-up (first request pays lazy imports and allocations)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(total)))
    wall = time.perf_counter() - t0
    ok = [lat for code, lat, _ in results if code == 200]
    emit(bench="generate", clients=clients, requests=total, ok=len(ok),
         status_503=sum(code == 503 for code, *_ in results),
         other_errors=sum(code not in (200, 503) for code, *_ in results),
         p50_s=percentile(ok, 50), p95_s=percentile(ok, 95),
         throughput_rps=round(len(ok) / wall, 3), frames_per_s=round(sum(f for *_, f in results) / wall, 1),
         audio_s_per_s=round(len(ok) * len(target.speech) / SAMPLE_RATE / wall, 2),
         output=fields["output"], crop_only=fields["crop_only"] == "true")


def cpu_times() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of this machine so far (Linux ``/proc/stat``; None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            values = [float(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
    return sum(values) - idle, sum(values)


def cores_busy(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """Cores this machine kept busy on average between two :func:`cpu_times` readings."""
    import os

    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]) * (os.cpu_count() or 1), 2)


def stream_round(target: Target, n: int, speech: np.ndarray, seconds: float, chunk_ms: int) -> bool:
    """``n`` concurrent real-time streams of ``speech``; prints their figures and returns whether
    every one kept up (≥ 25 frames/s within 2 %, last frame within 1.5 s of the audio's end,
    closed 1000)."""
    from concurrent.futures import ThreadPoolExecutor

    from serve.client import stream

    before = cpu_times()
    with ThreadPoolExecutor(n) as pool:
        runs = list(pool.map(lambda _: stream(target.url, target.portrait_id, speech, SAMPLE_RATE,
                                              chunk_ms=chunk_ms, realtime=True, api_key=target.api_key),
                             range(n)))
    busy = cores_busy(before, cpu_times())
    firsts = [s.first_frame_s for s in runs if s.first_frame_s is not None]
    fps = [s.fps for s in runs if s.fps is not None]
    lag = [s.frames[-1][2] - s.first_chunk_at - seconds for s in runs if s.frames]
    realtime = (len(fps) == n and min(fps) >= REALTIME_FPS and max(lag) <= 1.5
                and all(s.close_code == 1000 for s in runs))
    emit(bench="stream", concurrent=n, chunk_ms=chunk_ms, audio_s=seconds,
         frames=[len(s.frames) for s in runs],
         first_frame_s_p50=percentile(firsts, 50), first_frame_s_p95=percentile(firsts, 95),
         first_frame_s_max=percentile(firsts, 100),
         fps_min=round(min(fps), 1) if fps else None,
         fps_median=round(statistics.median(fps), 1) if fps else None,
         end_lag_s_max=round(max(lag), 2) if lag else None, cores_busy=busy, realtime=realtime,
         errors=[s.error for s in runs if s.error])
    return realtime


def stream_ramp(target: Target, max_streams: int, seconds: float, chunk_ms: int) -> None:
    """1, 2, … ``max_streams`` concurrent streams, stopping at the first n that does not keep up;
    the capacity is the largest n that did."""
    from serve.client import stream

    speech = np.resize(target.speech, int(seconds * SAMPLE_RATE))
    stream(target.url, target.portrait_id, target.speech[:SAMPLE_RATE], SAMPLE_RATE, chunk_ms=chunk_ms,
           realtime=False, api_key=target.api_key)  # warm-up
    sustained = 0
    for n in range(1, max_streams + 1):
        if not stream_round(target, n, speech, seconds, chunk_ms):
            break
        sustained = n
    emit(bench="stream_capacity", realtime_streams_sustained=sustained, tried_up_to=max_streams)


def serve_bench(
    url: str = typer.Option("http://127.0.0.1:8000", help="Base URL of a running app (disenttalk serve)."),
    image: str | None = typer.Option(None, help="Portrait photo (default: the astronaut)."),
    audio: str | None = typer.Option(None, help="Speech file (default: a synthetic 4 s voice-like tone)."),
    seconds: float = typer.Option(4.0, help="Length of the default audio."),
    clients: int = typer.Option(4, help="Concurrent HTTP clients of /v1/generate."),
    requests_total: int = typer.Option(16, "--requests", help="Generate requests in all (0: skip)."),
    output: str = typer.Option("mp4", help="mp4 | motion."),
    crop_only: bool = typer.Option(True, help="Generate the 256² crop (else pasted into the photo)."),
    steps: int | None = typer.Option(None, help="DDIM steps (default: the server's)."),
    max_streams: int = typer.Option(3, "--streams", "--max-streams",
                                    help="Concurrent real-time streams 1..N, stopping at the first "
                                         "that misses 25 frames/s (0: skip)."),
    stream_seconds: float = typer.Option(8.0, help="Audio per stream, sent in real time."),
    chunk_ms: int = typer.Option(200, help="Audio per WebSocket message."),
    watch: str | None = typer.Option(None, help="Ray address (e.g. auto) to record the generator's replica count."),
    app_name: str = typer.Option("disenttalk", help="Serve application name (with --watch)."),
) -> None:
    """Load test of a running app: latency, throughput, 503s; stream first-frame latency and fps."""
    target = connect(url, image, audio, seconds)
    watcher = ReplicaWatch(app_name, "Animator", watch) if watch else None
    fields = {"portrait_id": target.portrait_id, "output": output, "crop_only": str(crop_only).lower()}
    if steps:
        fields["steps"] = str(steps)
    if requests_total > 0:
        generate_load(target, clients, requests_total, fields)
    if max_streams > 0:
        stream_ramp(target, max_streams, stream_seconds, chunk_ms)
    if watcher is not None:
        emit(bench="replicas", deployment="Animator", **watcher.stop())


def generate_bench(
    model: str = typer.Option(CHAMPION_URI, help="Model URI or bundle folder."),
    image: str | None = typer.Option(None, help="Portrait photo (default: the astronaut, 512²)."),
    audio: str | None = typer.Option(None, help="Speech file (default: a synthetic voice-like tone)."),
    seconds: float = typer.Option(8.0, help="Length of the default audio."),
    steps: int = typer.Option(DEFAULT_STEPS, help="DDIM steps."),
    repeats: int = typer.Option(3, help="Timed runs per case (the median is reported)."),
    threads: int | None = typer.Option(None, help="torch threads (a 1-CPU Serve replica has 1)."),
    hot_path: str = typer.Option("auto", help="What runs the sampler steps: eager | onnx | auto | compiled."),
) -> None:
    """Audio → mp4 speed with the model loaded and the portrait prepared (what a serving replica does)."""
    from types import SimpleNamespace

    import torch

    from serve.config import ServeConfig
    from serve.engine import Engine
    from serve.inputs import decode_image
    from serve.portraits import content_id, prepare

    if threads:
        torch.set_num_threads(threads)
    photo_bytes, speech = bench_inputs(image, audio, seconds)
    engine = Engine(ServeConfig.from_dict({"hot_path": hot_path}))
    t0 = time.perf_counter()
    info = engine.load(model)
    cfg = engine.cfg.limits
    portrait = prepare(content_id(photo_bytes), decode_image(photo_bytes, cfg, cfg.max_photo_side))
    emit(model=model, version=info["version"], device=info["device"], threads=torch.get_num_threads(),
         hot_path=hot_path,
         load_s=round(time.perf_counter() - t0, 2), audio_s=round(len(speech) / SAMPLE_RATE, 2),
         photo=portrait.summary()["image_size"])
    options = dict(steps=steps, guidance=None, seed=0, lip_scale=1.0, eye_scale=1.0, global_scale=1.0,
                   blinks=True, blink_rate=None, output="mp4")
    engine.generate(speech[:SAMPLE_RATE], portrait, SimpleNamespace(**options, crop_only=True))
    # "motion": the motion alone (output=motion); in the video cases it samples window by window
    # while the frames render, so there its seconds are shared with the renderer's
    for case, output, crop_only in (("motion", "motion", True), ("crop", "mp4", True),
                                    ("pasted", "mp4", False)):
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            meta = engine.generate(speech, portrait, SimpleNamespace(
                **{**options, "output": output}, crop_only=crop_only))["meta"]
            runs.append((time.perf_counter() - start, meta))
        wall = statistics.median(r[0] for r in runs)
        meta = min(runs, key=lambda r: abs(r[0] - wall))[1]
        rtf = round(meta["motion_s"] / (len(speech) / SAMPLE_RATE), 4)
        if output == "motion":
            emit(case=case, frames=meta["frames"], seconds=round(wall, 3), motion_rtf=rtf,
                 motion_s=meta["motion_s"], steps=steps)
            continue
        emit(case=case, size=meta["size"], frames=meta["frames"], seconds=round(wall, 3),
             frames_per_s=round(meta["frames"] / wall, 1), motion_rtf=rtf,
             motion_s=meta["motion_s"], render_s=meta["render_s"], encode_s=meta["encode_s"], steps=steps)
