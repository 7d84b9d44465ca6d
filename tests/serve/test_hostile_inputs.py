"""Hostile uploads against the running app: memory stays flat and the refusal comes early.

Each replica's memory is read from /proc: its peak resident set (VmHWM) is reset before the
request and read after, so the figure is the most the request made it hold, not a sample.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from tests.serve.hostile_media import encoded, silent_flac

pytestmark = pytest.mark.ray
TIMEOUT = 120
MB = 1024 * 1024
LINK = 100e6 / 8  # bytes/s of a 100 Mbit/s link


def actor_pid(class_name: str) -> int:
    """The pid of the (one) live actor of ``class_name`` in this session's cluster (a replica:
    ``ServeReplica:<app>:<deployment>``; Serve's HTTP proxy: ``ProxyActor``)."""
    import ray
    from ray.util.state import list_actors

    found = list_actors(address=ray.get_runtime_context().gcs_address,
                        filters=[("state", "=", "ALIVE")], limit=10_000)
    pids = [a.pid for a in found if a.class_name == class_name]
    assert len(pids) == 1, pids
    return pids[0]


def replica_pid(deployment: str) -> int:
    """The pid of the (one) replica of ``deployment``: ``Ingress``, ``Animator``, ..."""
    from serve.app import APP_NAME

    return actor_pid(f"ServeReplica:{APP_NAME}:{deployment}")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak since the last :func:`reset_peak`) in MB."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("VmRSS", "VmHWM")))
    return {k: int(v.split()[0]) / 1024 for k, v in fields.items()}


def reset_peak(pid: int) -> float:
    """Reset the process's peak RSS to its RSS now (``clear_refs`` 5); that RSS in MB."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return memory_mb(pid)["VmRSS"]


def chunked_post(url: str, path: str, headers: dict, head: bytes, total: int, rate: float,
                 chunk: int = 256 * 1024) -> tuple[int, dict, int, float]:
    """POST a chunked body (no Content-Length) of ``total`` bytes, ``head`` first, at ``rate``
    bytes/s, as a client that stops sending once the server answers: status, JSON body, bytes
    sent by then, seconds."""
    parts = urlsplit(url)
    start = time.perf_counter()
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as sock:
        lines = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", "Transfer-Encoding: chunked",
                 *(f"{k}: {v}" for k, v in headers.items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sent, block = 0, b"\0" * chunk
        try:
            while sent < total and not select.select([sock], [], [], 0)[0]:
                piece = head if sent == 0 else block[:total - sent]
                sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
                sent += len(piece)
                time.sleep(max(0.0, start + sent / rate - time.perf_counter()))
            if sent >= total:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # the server may close once it answered
            pass
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
    return response.status, json.loads(body), sent, time.perf_counter() - start


EPILOGUE = b"--XyZ\r\nContent-Disposition: form-data; name=\"seed\"\r\n\r\n1\r\n--XyZ--\r\n"


@pytest.fixture(scope="module")
def portrait_id(server, portrait_png) -> str:
    r = requests.post(f"{server}/v1/portraits", files={"image": ("a.png", portrait_png)}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()["portrait_id"]


def post_audio(server, data: bytes, name: str, portrait_id: str) -> requests.Response:
    return requests.post(f"{server}/v1/generate", files={"audio": (name, data)},
                         data={"portrait_id": portrait_id, "output": "motion"}, timeout=TIMEOUT)


def test_an_hour_of_silent_flac_is_refused_within_2_s_with_flat_generator_memory(server, portrait_id):
    print(f"\n1 h of 16 kHz FLAC silence: {len(silent_flac(3600))} bytes")
    pid = replica_pid("Animator")
    post_audio(server, silent_flac(1.0), "warm.flac", portrait_id)  # the decoding path loaded
    for declared in (True, False):  # refused from STREAMINFO; STREAMINFO blank: while decoding
        rest = reset_peak(pid)
        t = time.perf_counter()
        r = post_audio(server, silent_flac(3600, declare=declared), "hour.flac", portrait_id)
        seconds = time.perf_counter() - t
        error = r.json()["error"]
        assert (r.status_code, error["code"], error["field"]) == (413, "audio_too_long", "audio"), r.text
        peak = memory_mb(pid)["VmHWM"]
        print(f"declared={declared}: 413 in {seconds:.2f} s; Animator RSS at rest {rest:.0f} MB, "
              f"peak during the request {peak:.0f} MB (+{peak - rest:.1f})")
        assert seconds < 2.0
        assert peak - rest < 100


def test_a_200_mb_chunked_upload_is_refused_before_it_is_sent_with_flat_ingress_memory(server):
    """From a client on a 100 Mbit/s link. Serve's HTTP proxy reads a body ahead of the app,
    from before it has picked a replica, and hands it on unbounded: what the ingress is handed
    before the 413 is out is the link's rate times that latency. At 1 Gbit/s on 2 busy cores
    that was up to 60 MB; from this machine at memory speed, up to the whole body (see
    "Uploads" in docs/serving.md). The app itself reads no more than the limit
    (test_inputs.py::test_upload_bytes_are_counted_as_they_arrive)."""
    pid, proxy = replica_pid("Ingress"), actor_pid("ProxyActor")
    form = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    head = (b"--XyZ\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"big.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\n")
    cases = [("/v1/generate", form, head, "audio"),  # one file past its cap
             ("/v1/generate", form, EPILOGUE, None),  # an epilogue the parser skips: the body's cap
             ("/v1/speech", {"Content-Type": "application/json"}, b"{", None)]  # 64 KiB of JSON
    for path, headers, first, field in cases:
        rest, proxy_rest = reset_peak(pid), reset_peak(proxy)
        status, body, sent, seconds = chunked_post(server, path, headers, first, 200 * MB, LINK)
        peak, proxy_peak = memory_mb(pid)["VmHWM"], memory_mb(proxy)["VmHWM"]
        print(f"\n{path}: {status} {body['error']['code']} after {sent / MB:.1f} of 200 MB sent, "
              f"{seconds:.2f} s; Ingress RSS at rest {rest:.0f} MB, peak {peak:.0f} MB (+{peak - rest:.1f}); "
              f"Serve's proxy +{proxy_peak - proxy_rest:.1f} MB")
        assert (status, body["error"]["code"], body["error"].get("field")) == (413, "upload_too_large", field)
        assert sent < 200 * MB  # answered while the client was still sending
        assert peak - rest < 50


def test_audio_formats_outside_the_allow_list_are_refused_naming_the_allowed_ones(server, portrait_id):
    for name, data in [("speech.aiff", encoded("aiff", "pcm_s16be")),
                       ("speech.mkv", encoded("matroska", "flac"))]:
        r = post_audio(server, data, name, portrait_id)
        error = r.json()["error"]
        assert (r.status_code, error["code"], error["field"]) == (415, "unsupported_media", "audio"), r.text
        assert all(kind in error["message"] for kind in ("WAV", "MP3", "Ogg", "FLAC", "WebM", "M4A"))
