"""A watch on a replica's event loop: when it stops answering, every thread's stack goes to the log.

A replica whose event loop is held (a blocking call on it, a lock, a C extension that keeps the
GIL) answers nothing, not even Serve's health check, and after ``health_check_timeout_s`` the
controller replaces it, leaving no trace of what held it. :class:`LoopWatch` runs a thread that
schedules a no-op on the loop every ``every_s``; when one has waited ``stall_s``, it logs a
warning with the stack of every thread of the process (``faulthandler``, which needs neither the
loop nor the GIL's holder to cooperate), once per stall, and how long the stall lasted when the
loop answers again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import faulthandler
import logging
import sys
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


async def _noop() -> None:
    return None


class LoopWatch:
    """Pings ``loop`` from a daemon thread once :meth:`attach` has been given it."""

    def __init__(self, every_s: float = 2.0, stall_s: float = 10.0, out: Any = None) -> None:
        self.every_s, self.stall_s, self.out = every_s, stall_s, out
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stalls = 0  # stalls seen (each dumped once)
        self._stop = threading.Event()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start watching ``loop`` (once; later calls do nothing)."""
        if self.loop is None:
            self.loop = loop
            threading.Thread(target=self._run, name="loop-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            if self.loop is None or self.loop.is_closed():
                return
            started = time.monotonic()
            ping = asyncio.run_coroutine_threadsafe(_noop(), self.loop)
            try:
                ping.result(timeout=self.stall_s)
                continue
            except concurrent.futures.TimeoutError:
                pass
            self.stalls += 1
            out = self.out or sys.stderr
            log.warning("the event loop has not run for %.1f s; the stacks of every thread follow",
                        time.monotonic() - started)
            faulthandler.dump_traceback(file=out, all_threads=True)
            try:
                ping.result()  # until the loop runs again
            except concurrent.futures.CancelledError:
                return
            log.warning("the event loop ran again after %.1f s", time.monotonic() - started)
