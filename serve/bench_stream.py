"""A long real-time stream against a running app: are the frames all there, in sync, and is
memory flat?

``python -m serve.bench_stream --url http://127.0.0.1:8000 --seconds 600`` (a 10-minute stream;
the server's ``limits.max_stream_s`` and ``stream.max_session_s`` must allow it: the defaults, 600
and 660, do) sends speech in PCM16 chunks at real-time pace, as a microphone would, and prints
JSON lines: every ``--every-s`` seconds the audio sent, the frames received and the resident
memory (RSS, MB) of each Ingress, Animator and Portraits replica process on this machine; at the
end the frame count against 25 × the audio's seconds, the last frame's span of the audio against
the audio sent, and the close code. Replicas on other machines are not measured.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from typing import Any

import numpy as np
import typer

from disenttalk.constants import SAMPLE_RATE

DEPLOYMENTS = ("Ingress", "Animator", "Portraits")


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def replica_rss_mb(app: str = "disenttalk") -> dict[str, list[float]]:
    """RSS (MB) of this machine's Serve replica processes of ``app``, by deployment."""
    from serve.soak_ray import local_replica_pids, memory_bytes

    out: dict[str, list[float]] = {name: [] for name in DEPLOYMENTS}
    for label, pid in local_replica_pids(app).items():
        name = label.split("@")[0]
        if name in out and (memory := memory_bytes(pid)) is not None:
            out[name].append(round(memory[0] / 2**20, 1))
    return {name: sorted(v) for name, v in out.items()}


class Tally:
    """What the stream has done so far (the sender, receiver and monitor threads share it)."""

    def __init__(self) -> None:
        self.sent = 0  # samples
        self.frames = 0
        self.last_audio: list[int] | None = None  # the last frame's span of the audio sent
        self.first_frame_at: float | None = None
        self.end: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.close_code: int | None = None
        self.done = threading.Event()


def _send(ws: Any, audio: np.ndarray, chunk_ms: int, tally: Tally) -> None:
    """Audio at real-time pace (chunk k once (k+1)·chunk of time has passed), then ``end``."""
    from websockets.exceptions import ConnectionClosed

    from serve.client import to_pcm16

    step = int(SAMPLE_RATE * chunk_ms / 1000)
    t0 = time.perf_counter()
    try:
        for k, i in enumerate(range(0, len(audio), step)):
            time.sleep(max(0.0, t0 + (k + 1) * chunk_ms / 1000 - time.perf_counter()))
            ws.send(to_pcm16(audio[i:i + step]))
            tally.sent = min(len(audio), i + step)
        ws.send(json.dumps({"type": "end"}))
    except ConnectionClosed:
        pass


def _receive(ws: Any, tally: Tally, started: float) -> None:
    from websockets.exceptions import ConnectionClosed

    from serve.stream import unpack_frame

    try:
        while True:
            message = ws.recv(timeout=120)
            if isinstance(message, bytes):
                header, _ = unpack_frame(message)
                tally.frames += 1
                tally.last_audio = header["audio"]
                if tally.first_frame_at is None:
                    tally.first_frame_at = time.perf_counter() - started
                continue
            msg = json.loads(message)
            if msg.get("type") == "end":
                tally.end = msg
            elif msg.get("type") == "error":
                tally.error = msg.get("error")
    except ConnectionClosed as exc:
        tally.close_code = exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        tally.error = {"code": "client_timeout", "message": "no message for 120 s"}
    finally:
        tally.done.set()


def _monitor(tally: Tally, every_s: float, app: str, started: float) -> None:
    while not tally.done.wait(every_s):
        emit(t_s=round(time.perf_counter() - started, 1), sent_s=round(tally.sent / SAMPLE_RATE, 1),
             frames=tally.frames, rss_mb=replica_rss_mb(app))


def _portrait(url: str, photo: bytes, headers: dict[str, str]) -> str:
    import requests

    r = requests.post(f"{url}/v1/portraits", files={"image": ("photo", photo)}, headers=headers, timeout=300)
    if r.status_code != 200:
        raise typer.BadParameter(f"{url}/v1/portraits answered {r.status_code}: {r.text[:300]}")
    return r.json()["portrait_id"]


def long_stream(url: str, seconds: float, chunk_ms: int = 200, image: str | None = None,
                audio: str | None = None, every_s: float = 60.0, app: str = "disenttalk") -> dict[str, Any]:
    """Run the stream, print the per-interval lines and return (and print) the summary."""
    from websockets.sync.client import connect

    from serve.bench import bench_inputs
    from serve.client import ws_url

    key = os.environ.get("DISENTTALK_API_KEY")
    headers = {"X-API-Key": key} if key else {}
    photo, speech = bench_inputs(image, audio, seconds)
    speech = np.resize(speech, int(seconds * SAMPLE_RATE)).astype(np.float32)  # a short file, looped
    pid = _portrait(url, photo, headers)
    emit(url=url, audio_s=round(len(speech) / SAMPLE_RATE, 2), chunk_ms=chunk_ms, rss_mb=replica_rss_mb(app))
    tally = Tally()
    with connect(ws_url(url), max_size=None, open_timeout=120, close_timeout=10,
                 additional_headers=headers) as ws:
        ws.send(json.dumps({"type": "start", "portrait_id": pid, "sample_rate": SAMPLE_RATE, "stats": True}))
        ready = json.loads(ws.recv(timeout=120))
        if ready.get("type") != "ready":
            raise typer.BadParameter(f"the stream was refused: {ready}")
        started = time.perf_counter()
        threading.Thread(target=_send, args=(ws, speech, chunk_ms, tally), daemon=True).start()
        threading.Thread(target=_monitor, args=(tally, every_s, app, started), daemon=True).start()
        _receive(ws, tally, started)
    return _summary(tally, len(speech), ready, time.perf_counter() - started, app)


def _summary(tally: Tally, samples: int, ready: dict[str, Any], wall_s: float, app: str) -> dict[str, Any]:
    fps = float(ready["fps"])
    per_frame = SAMPLE_RATE / fps
    last_end = tally.last_audio[1] if tally.last_audio else 0
    summary = {"audio_s": round(samples / SAMPLE_RATE, 3), "frames": tally.frames,
               "expected_frames": math.ceil(samples / per_frame), "fps": fps,
               "last_frame_audio": tally.last_audio, "audio_sent": tally.sent,
               "last_frame_gap_frames": round((tally.sent - last_end) / per_frame, 3),
               "first_frame_s": round(tally.first_frame_at, 3) if tally.first_frame_at else None,
               "wall_s": round(wall_s, 1), "close_code": tally.close_code, "error": tally.error,
               "stats": (tally.end or {}).get("stats"), "rss_mb": replica_rss_mb(app)}
    summary["ok"] = (tally.close_code == 1000 and summary["frames"] == summary["expected_frames"]
                     and abs(summary["last_frame_gap_frames"]) <= 1)
    emit(**summary)
    return summary


def stream_bench(
    url: str = typer.Option("http://127.0.0.1:8000", help="the running app"),
    seconds: float = typer.Option(600.0, help="audio to stream, in real time"),
    chunk_ms: int = typer.Option(200, help="audio per message"),
    every_s: float = typer.Option(60.0, help="seconds between progress and memory lines"),
    image: str | None = typer.Option(None, help="portrait photo (default: the astronaut)"),
    audio: str | None = typer.Option(None, help="speech file, looped to --seconds (default: a tone)"),
    app: str = typer.Option("disenttalk", help="the Serve application's name (for the replicas' RSS)"),
) -> None:
    """A long real-time stream: frames vs 25 × audio seconds, sync of the last frame, replica RSS."""
    summary = long_stream(url, seconds, chunk_ms, image, audio, every_s, app)
    raise typer.Exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    typer.run(stream_bench)
