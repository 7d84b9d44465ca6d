"""Encoding a chunk of frames while the next one renders (:class:`BackgroundWriter`),
sampling the next window of motion while this one's frames render (:class:`Ahead`), and
rendering chunks side by side (:func:`map_in_order`).

PyAV releases the GIL while x264 converts and encodes, and torch and ONNX Runtime while they
compute, so a video's chunk k can be encoded in a worker thread while chunk k+1 is rendered in
the caller's, and window k+1 of its motion sampled in another: the video takes about the
longest of the three instead of their sum. With more than one core, chunks k+1 and k+2 render
at once: the renderer's operations are small (a 32-frame chunk of 256² crops), so two of them
side by side keep the cores busier than one spread over both by torch's own threads.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int = 1) -> Iterator[R]:
    """``fn`` of each of ``items``, in order, computed on up to ``workers`` threads at once.

    An item is taken only when a thread is free, so at most ``workers`` are in hand besides the
    result the caller holds; an error of ``fn`` comes back from the caller's next result; a
    caller that leaves early cancels what has not started and waits for what has. One worker:
    ``fn`` runs in the caller's thread, no thread is started.
    """
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="in-order") as pool:
        pending: deque[Future[R]] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class BackgroundWriter:
    """Hands chunks to ``writer.write`` in one worker thread, in order, at most ``depth`` waiting
    (so memory holds the chunk being rendered, ``depth`` queued and the one being encoded).

    An error of the writer comes back from the next :meth:`write` or from :meth:`close`;
    ``busy_s`` is the time the worker spent writing. Used as a context manager, leaving on an
    error drops what is queued and waits for the worker."""

    def __init__(self, writer: Any, depth: int = 1) -> None:
        self.writer, self.busy_s = writer, 0.0
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._run, name="video-encoder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (frames := self._queue.get()) is not None:
            if self._error is not None or self._abandon.is_set():
                continue  # drain: the caller learns of the error on its next call
            start = time.perf_counter()
            try:
                self.writer.write(frames)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc
            self.busy_s += time.perf_counter() - start

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, frames: np.ndarray) -> None:
        """Queue a chunk (waits while ``depth`` chunks are queued); raises an earlier chunk's error."""
        self._raise()
        if not self._thread.is_alive():
            raise RuntimeError("the background writer is closed")
        self._queue.put(frames)

    def close(self) -> None:
        """Wait until every queued chunk is written; raises a chunk's error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
            return
        self._abandon.set()
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


class Ahead(Generic[T]):
    """Iterates ``items`` in one worker thread, at most ``depth`` items ahead of the caller.

    Iterating an ``Ahead`` gives the same items in order; an error of ``items`` comes back from
    the caller's next item. ``busy_s`` is the time the worker spent making items. Used as a
    context manager, leaving (done or on an error) stops the worker after its current item and
    waits for it, so nothing keeps running for a caller that left."""

    def __init__(self, items: Iterable[T], depth: int = 1) -> None:
        self.busy_s = 0.0
        self._items = iter(items)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ahead", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                item = next(self._items, _END)
                self.busy_s += time.perf_counter() - start
                self._put(item)
                if item is _END:
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self._put(_Failed(exc))

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def close(self) -> None:
        """Stop the worker after its current item and wait for it."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Ahead[T]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
