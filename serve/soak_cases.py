"""The bad and hostile requests of ``disenttalk bench soak``, each with what the API promises.

A case returns ``("http", status)`` or ``("ws", close code)``; ``expected`` is the contract of
issue 26 (413 before an oversized or endless upload is read, 415 for formats outside the
allow-list, 403 for a foreign Origin, 4404 / 404 for unknown portraits, 4400 for bad start
messages, 4408 for a client that never starts or trickles, 1000 or 4413 for audio sent faster
than real time). Uploads that should be refused early go over a raw socket, so the answer is
read as soon as it comes, before the body is sent in full.
"""

from __future__ import annotations

import io
import json
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from disenttalk.constants import SAMPLE_RATE

FOREIGN_ORIGIN = "https://attacker.example"
NO_ANSWER = "no_answer"


@dataclass(frozen=True)
class Case:
    name: str
    expected: frozenset[int]
    run: Callable[[Any], tuple[str, int | str]]


# -- media ----------------------------------------------------------------------------------------
def _crc(data: bytes, poly: int, bits: int) -> int:
    """FLAC's CRC-8 (poly 0x07) and CRC-16 (poly 0x8005): MSB first, init 0."""
    top, mask, crc = 1 << (bits - 1), (1 << bits) - 1, 0
    for byte in data:
        crc ^= byte << (bits - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
    return crc


def _utf8_number(n: int) -> bytes:
    """A FLAC frame number, coded like UTF-8 (up to 3 bytes here)."""
    if n < 0x80:
        return bytes([n])
    if n < 0x800:
        return bytes([0xC0 | n >> 6, 0x80 | n & 0x3F])
    return bytes([0xE0 | n >> 12, 0x80 | (n >> 6) & 0x3F, 0x80 | n & 0x3F])


def silent_flac(seconds: float, rate: int = 16000, block: int = 64000, declare: bool = True) -> bytes:
    """Mono 16-bit FLAC silence, each frame one CONSTANT subframe of ``block`` samples: an hour is
    ~13 kB. ``declare=False`` leaves STREAMINFO's total sample count 0 (unknown), so only
    decoding tells the length."""
    total = int(seconds * rate)
    frames = -(-total // block)
    info = struct.pack(">HH", block, block) + b"\0" * 6  # block sizes; frame sizes unknown
    packed = (rate << 44) | (0 << 41) | (15 << 36) | (total if declare else 0)  # mono, 16 bits
    info += packed.to_bytes(8, "big") + b"\0" * 16  # no MD5
    out = bytearray(b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info)
    for n in range(frames):
        size = min(block, total - n * block)
        header = bytes([0xFF, 0xF8, 0x70, 0x08]) + _utf8_number(n) + struct.pack(">H", size - 1)
        frame = header + bytes([_crc(header, 0x07, 8)]) + b"\x00\x00\x00"  # CONSTANT 0
        out += frame + struct.pack(">H", _crc(frame, 0x8005, 16))
    return bytes(out)


def sun_au(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A Sun/NeXT .au tone: FFmpeg decodes it, the server's allow-list does not take it."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype(">i2").tobytes()
    return b".snd" + struct.pack(">IIIII", 24, len(pcm), 3, rate, 1) + pcm


def pixel_bomb() -> bytes:
    """A 7000×6000 grey PNG (42 Mpx, past max_image_pixels) of a few tens of kB."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (7000, 6000)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# -- raw HTTP uploads -----------------------------------------------------------------------------
def _multipart(fields: dict[str, str], file_field: str, boundary: str) -> tuple[bytes, bytes]:
    """The bytes before and after one file part's content."""
    head = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                    for k, v in fields.items())
    head += (f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="upload"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head, f"\r\n--{boundary}--\r\n".encode()


def raw_upload(url: str, path: str, headers: dict[str, str], fields: dict[str, str], file_field: str,
               content: Iterator[bytes], declared: int | None, timeout: float = 60.0) -> int | str:
    """POST a multipart upload over a plain socket: ``Content-Length: declared`` or chunked
    (None); stops sending once the server answers. The HTTP status, or :data:`NO_ANSWER`."""
    where = urlsplit(url)
    boundary = os.urandom(8).hex()
    head, tail = _multipart(fields, file_field, boundary)
    lines = [f"POST {path} HTTP/1.1", f"Host: {where.netloc}",
             f"Content-Type: multipart/form-data; boundary={boundary}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    lines.append(f"Content-Length: {len(head) + declared + len(tail)}" if declared is not None
                 else "Transfer-Encoding: chunked")
    with socket.create_connection((where.hostname, where.port or 80), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            for part in _framed([head, *content, tail], chunked=declared is None):
                if select.select([sock], [], [], 0)[0]:
                    break  # the server answered already
                sock.sendall(part)
        except OSError:
            pass  # it closed the connection: read what it said
        return _status(sock)


def _framed(parts: Iterator[bytes] | list[bytes], chunked: bool) -> Iterator[bytes]:
    for part in parts:
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part
    if chunked:
        yield b"0\r\n\r\n"


def _status(sock: socket.socket) -> int | str:
    data = b""
    try:
        while b"\r\n" not in data:
            more = sock.recv(4096)
            if not more:
                break
            data += more
    except OSError:
        pass
    try:
        return int(data.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return NO_ANSWER


def zeros(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    block = bytes(chunk)
    for start in range(0, total, chunk):
        yield block[: min(chunk, total - start)]


# -- WebSocket ------------------------------------------------------------------------------------
def ws_exchange(soak: Any, first: str | bytes | None, origin: str | None = None,
                wait: float = 40.0, then: Callable[[Any], None] | None = None) -> tuple[str, int | str]:
    """Open ``/v1/stream``, send ``first`` (None: nothing), run ``then(ws)``, and read until the
    server closes: ``("ws", code)``, ``("ws", "open")`` after ``wait``, or ``("http", status)``."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    from serve.client import ws_url

    try:
        ws = connect(ws_url(soak.url), origin=origin, proxy=None, open_timeout=30, close_timeout=5)
    except InvalidStatus as exc:
        return "http", exc.response.status_code
    except OSError:
        return "http", NO_ANSWER
    with ws:
        try:
            if first is not None:
                ws.send(first)
            if then is not None:
                then(ws)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        except ConnectionClosed as exc:
            return "ws", exc.rcvd.code if exc.rcvd else None
        except TimeoutError:
            pass
    return "ws", "open"


def _start(soak: Any, **fields: Any) -> str:
    message = {"type": "start", "portrait_id": soak.portrait_id, "sample_rate": SAMPLE_RATE, **fields}
    if soak.api_key:
        message["api_key"] = soak.api_key
    return json.dumps(message)


def trickle(soak: Any) -> tuple[str, int | str]:
    """A valid stream that sends one sample every 20 s: the session deadline must end it (4408);
    ``("ws", "open")`` when the soak ends first."""
    left = []

    def drip(ws: Any) -> None:
        while not soak.stop.wait(20.0):
            ws.send(b"\0\0")
        left.append(True)  # the soak ended: this client leaves
        ws.close()

    outcome = ws_exchange(soak, _start(soak), wait=5.0, then=drip)
    return ("ws", "open") if left else outcome


def burst(soak: Any) -> tuple[str, int | str]:
    """8 s of speech sent at once, then the end message."""
    from serve.client import stream

    speech = np.resize(soak.speech, 8 * SAMPLE_RATE)
    result = stream(soak.url, soak.portrait_id, speech, SAMPLE_RATE, realtime=False,
                    api_key=soak.api_key, timeout=120)
    return ("http", result.http_status) if result.http_status else ("ws", result.close_code)


# -- the cases ------------------------------------------------------------------------------------
def cases(soak: Any) -> list[Case]:
    """The rotation of quick hostile cases (``silent_start`` and ``trickle`` run on their own)."""
    mb = int(soak.upload_mb * 2**20)
    hdr = dict(soak.headers)
    pid = {"portrait_id": soak.portrait_id}
    flac, au, bomb = silent_flac(3600), sun_au(), pixel_bomb()
    other = os.urandom(32).hex()

    def upload(field: str, data: bytes, path: str = "/v1/generate", extra: dict | None = None):
        return lambda s: ("http", raw_upload(s.url, path, {**hdr, **(extra or {})},
                                             pid if path == "/v1/generate" else {}, field, iter([data]), len(data)))

    return [
        Case("oversized_upload", frozenset({413}), lambda s: (
            "http", raw_upload(s.url, "/v1/generate", hdr, pid, "audio", zeros(mb + 2**20), mb + 2**20))),
        Case("chunked_200mb", frozenset({413}), lambda s: (
            "http", raw_upload(s.url, "/v1/generate", hdr, pid, "audio", zeros(200 * 2**20), None))),
        Case("silent_flac_hour", frozenset({413}), upload("audio", flac)),
        Case("disallowed_format_au", frozenset({415}), upload("audio", au)),
        Case("pixel_bomb", frozenset({413}), upload("image", bomb, "/v1/portraits")),
        Case("foreign_origin_http", frozenset({403}), upload("audio", au, extra={"Origin": FOREIGN_ORIGIN})),
        Case("unknown_portrait_http", frozenset({404}), lambda s: (
            "http", raw_upload(s.url, "/v1/generate", hdr, {"portrait_id": other}, "audio",
                               iter([s.wav]), len(s.wav)))),
        Case("foreign_origin_ws", frozenset({403, 4403, 1008}), lambda s: ws_exchange(
            s, _start(s), origin=FOREIGN_ORIGIN)),
        Case("unknown_portrait_ws", frozenset({4404}), lambda s: ws_exchange(
            s, _start(s, portrait_id=other))),
        Case("bad_start_not_json", frozenset({4400}), lambda s: ws_exchange(s, "hello")),
        Case("bad_start_binary", frozenset({4400, 1003}), lambda s: ws_exchange(s, b"\0" * 640)),
        Case("bad_start_rate", frozenset({4400, 4422}), lambda s: ws_exchange(s, _start(s, sample_rate=12345))),
        Case("bad_start_field", frozenset({4400}), lambda s: ws_exchange(s, _start(s, lip_scale="loud"))),
        Case("burst_8s", frozenset({1000, 4413}), burst),
    ] + ([Case("wrong_key", frozenset({401}), lambda s: ("http", raw_upload(
        s.url, "/v1/portraits", {"X-API-Key": "wrong"}, {}, "image", iter([s.photo]), len(s.photo))))]
        if soak.api_key else [])


LONG_CASES = [
    Case("silent_start", frozenset({4408}), lambda s: ws_exchange(s, None, wait=45.0)),
    Case("trickle", frozenset({4408}), trickle),
]
