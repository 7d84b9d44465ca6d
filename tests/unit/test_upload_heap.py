"""Large request bodies leave no freed heap behind in the ingress (serve/upload.py)."""

from __future__ import annotations

import asyncio
import ctypes.util
import time
from pathlib import Path

import pytest

from serve import upload


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status RssAnon here")


@pytest.mark.skipif(upload._MALLOC_TRIM is None, reason=f"not glibc ({ctypes.util.find_library('c')})")
def test_freed_pages_inside_the_heap_go_back_to_the_os():
    blocks = [bytes(64 * 1024) for _ in range(3200)]  # 200 MB in the heap, under the mmap threshold
    del blocks[::2]  # 100 MB freed in holes glibc does not give back by itself
    before = rss_anon_mb()
    assert upload.release_freed_heap()
    after = rss_anon_mb()
    assert before - after > 40, (before, after)
    del blocks


def released_after(monkeypatch, body_bytes: int, limit: int = 64 << 20) -> tuple[int, list[float]]:
    """A body of ``body_bytes`` (1 MB messages) through BodyLimit to an app that reads it all:
    the status sent and, for each heap release, its seconds after the answer went out."""
    released: list[float] = []
    monkeypatch.setattr(upload, "release_freed_heap", lambda: released.append(time.monotonic()) or True)
    sizes = [1 << 20] * (body_bytes >> 20) + ([body_bytes % (1 << 20)] if body_bytes % (1 << 20) else [])
    messages = [{"type": "http.request", "body": bytes(n), "more_body": i < len(sizes) - 1}
                for i, n in enumerate(sizes)]
    answered: list[tuple[int, float]] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answered.append((message["status"], time.monotonic()))

    async def app(scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> None:
        await upload.BodyLimit(app, limit=limit)({"type": "http", "path": "/", "headers": []}, receive, send)
        await asyncio.sleep(1.0)

    asyncio.run(main())
    [(status, at)] = answered
    return status, [t - at for t in released]


def test_a_large_body_is_followed_by_a_heap_release_after_the_answer(monkeypatch):
    status, released = released_after(monkeypatch, 5 << 20)
    assert status == 200 and len(released) == 1 and 0.3 < released[0] < 1.0, released


def test_a_refused_body_is_followed_by_a_heap_release_and_a_small_one_is_not(monkeypatch):
    status, released = released_after(monkeypatch, 12 << 20, limit=8 << 20)
    assert status == 413 and len(released) == 1, released
    status, released = released_after(monkeypatch, upload.TRIM_BYTES - 1)
    assert status == 200 and released == []


HEAP_PROBE = """
import sys
from pathlib import Path
from serve import upload

def rss_anon_kb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

if sys.argv[1] == "bound":
    assert upload.bound_heap()
# glibc raises its mmap threshold to a mapped block's size once one is freed: blocks of that
# size then come from the heap, and freed in a row they stay there
big = bytes(4 << 20); del big
held = [bytearray(2 << 20) for _ in range(60)]  # 120 MB written
keep = held[-1]  # the heap's top stays in use, so glibc cannot trim it by itself
before = rss_anon_kb()
del held
print((before - rss_anon_kb()) // 1024)
"""


@pytest.mark.skipif(upload._MALLOC_TRIM is None, reason=f"not glibc ({ctypes.util.find_library('c')})")
def test_a_bounded_heap_hands_back_large_blocks_as_they_are_freed():
    """After bound_heap() (the ingress calls it first thing), blocks of 1 MB and more are mapped
    on their own: freeing 118 MB of them hands it back at once; glibc's default keeps it."""
    import subprocess
    import sys

    def freed_mb(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parents[2])
        return int(out.stdout.strip())

    assert freed_mb("bound") > 100
    assert freed_mb("default") < 20  # what the ingress would keep without it
