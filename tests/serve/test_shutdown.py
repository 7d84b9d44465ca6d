# ruff: noqa: F811  (fixtures imported from tests/ray/conftest.py are requested by name)
"""``disenttalk serve`` as a process: SIGTERM during a stream drains it, closes what is still open
with 1001 and exits 0 with every process it started gone.

The command runs in a session of its own (as under ``docker stop`` or systemd), with its own
local Ray cluster, serving a tiny random-weight model registered in a sqlite MLflow store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import requests

from tests.ray.conftest import eval_store, mlflow_uri, tiny_bundle  # noqa: F401  (fixtures)
from tests.serve.conftest import SR, TINY, free_port, png_bytes

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MODEL = "disenttalk-shutdown-test"
GRACE_S = 10.0  # shutdown_grace_s: the drain window is GRACE_S − STOP_RESERVE_S (6 s) = 4 s


@pytest.fixture(scope="module")
def served(tmp_path_factory, mlflow_uri, tiny_bundle):
    """A running ``disenttalk serve`` subprocess: (Popen, base URL, log path)."""
    from workflows.register import register

    register(str(tiny_bundle), {"test": {"lmd": 0.5}}, name=MODEL, experiment="shutdown-test")
    home = tmp_path_factory.mktemp("serve-home")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "DISENTTALK_API_KEY")}
    env.update(MLFLOW_TRACKING_URI=mlflow_uri, DISENTTALK_HOME=str(home))
    port = free_port()
    sets = [*TINY, "limits.max_stream_s=60", f"shutdown_grace_s={GRACE_S}",
            f"portrait_store.uri={home / 'portraits'}"]
    cmd = [sys.executable, "-m", "workflows.cli", "serve", "--port", str(port),
           "--model", f"models:/{MODEL}/1", *[a for s in sets for a in ("--set", s)]]
    log = home / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, url, log)
        yield proc, url, log
    finally:
        if proc.poll() is None:  # the test failed before stopping it
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def _wait_healthy(proc: subprocess.Popen, url: str, log, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"disenttalk serve exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"disenttalk serve not healthy after {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    from serve.shutdown import _proc_stat

    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and (_proc_stat(int(entry)) or (0, 0, "Z"))[2] != "Z":
                members.append(int(entry))
    return members


def test_sigterm_during_a_stream_drains_closes_1001_and_leaves_no_process(served, astronaut):
    from serve.client import stream
    from serve.shutdown import descendants, still_running

    proc, url, log = served
    portrait = requests.post(f"{url}/v1/portraits", files={"image": ("a.png", png_bytes(astronaut))}, timeout=120)
    assert portrait.status_code == 200, portrait.text
    t = np.arange(30 * SR) / SR  # 30 s sent in real time: it outlasts the drain window
    speech = (0.3 * np.sin(2 * np.pi * (200 + 80 * np.sin(2 * np.pi * 3 * t)) * t)).astype(np.float32)
    frames_seen, outcome = threading.Event(), {}

    def run() -> None:
        outcome["result"] = stream(url, portrait.json()["portrait_id"], speech, SR, chunk_ms=200,
                                   timeout=60, on_frame=lambda n: n >= 3 and frames_seen.set())

    client = threading.Thread(target=run)
    client.start()
    assert frames_seen.wait(90), f"no frames:\n{log.read_text()[-3000:]}"
    started = descendants(proc.pid)  # Ray's processes and theirs, while they run
    assert len(started) >= 3, started

    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    refused = _refused_while_draining(url, client)
    rc = proc.wait(GRACE_S + 30)
    took = time.monotonic() - t0
    client.join(30)
    result = outcome["result"]
    print(f"exit {rc} {took:.1f} s after SIGTERM; stream: {len(result.frames)} frames, "
          f"close {result.close_code}, {result.error}; refused while draining: {refused}")
    assert rc == 0, log.read_text()[-4000:]
    assert took <= GRACE_S + 5, f"stopped {took:.1f} s after SIGTERM (grace {GRACE_S} s)"
    assert result.close_code == 1001 and result.error["code"] == "shutting_down"
    assert len(result.frames) > 3  # frames kept coming during the drain window
    assert refused == (503, "shutting_down")
    assert still_running(started) == [], "Ray processes outlived disenttalk serve"
    assert _group_members(proc.pid) == []
    assert "1 stream(s) closed 1001" in log.read_text() and "stopped in" in log.read_text()


def _refused_while_draining(url: str, client: threading.Thread) -> tuple[int, str] | None:
    """What a new request gets while the stream keeps the server draining (first non-200)."""
    while client.is_alive():
        try:
            r = requests.get(f"{url}/v1/model", timeout=5)
        except requests.RequestException:
            return None  # the server is gone already
        if r.status_code != 200:
            return r.status_code, r.json().get("error", {}).get("code")
        time.sleep(0.2)
    return None
