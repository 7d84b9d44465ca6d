"""Windows of many streams and requests sampled together: one denoiser call for all of them.

A stream's window is a few dozen frames; alone, a DDIM step of it is a forward pass whose time
is mostly per-call overhead (a 1 M-parameter network on [2, 18, N]). Windows that are ready at
the same moment, from different streams and requests, are stacked into one batch and sampled
in one loop of denoiser calls. Each keeps its own audio, known frames, guidance scale and noise
(its own generator, seeded from (seed, window index)), and the network's rows do not depend on
one another (:class:`~disenttalk.model.denoiser.Denoiser` embeds the shared timestep once), so a
window's numbers are exactly those it gets sampled alone.

:class:`WindowBatcher` is the meeting point: callers in any thread hand it a :class:`WindowJob`
and wait; one of them at a time takes whatever is queued (waiting up to ``wait_ms`` for more
once the first arrives, at most ``max_batch``), samples each compatible group as one batch and
hands every caller its window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from disenttalk.model.diffusion import cfg_bind, cfg_eps, sample

if TYPE_CHECKING:
    from disenttalk.generate.generator import Generator, Settings


@dataclass
class WindowJob:
    """One window to sample: audio features [L,F], known values and mask [L,N], its noise seed."""

    feats: torch.Tensor
    cond: torch.Tensor
    mask: torch.Tensor
    settings: Settings
    seed: int  # the window's generator seed, from (stream seed, window index)

    @property
    def key(self) -> tuple[Any, ...]:
        """Windows with equal keys can share a batch: same length, timesteps, η and sampler."""
        sampler = self.settings.sampler
        eta = getattr(sampler, "eta", None)
        eta = tuple(eta.tolist()) if isinstance(eta, torch.Tensor) else eta
        return (self.feats.shape[0], type(sampler).__name__, tuple(sampler.timesteps.tolist()), eta)


def window_seed(seed: int, index: int) -> int:
    """The noise seed of window ``index`` of a stream seeded ``seed`` (offline and streamed alike)."""
    state = np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & 0x7FFF_FFFF_FFFF_FFFF


@torch.no_grad()
def sample_windows(gen: Generator, jobs: Sequence[WindowJob], clip_x0: float) -> list[torch.Tensor]:
    """Sample ``jobs`` (equal :attr:`WindowJob.key`) as one batch; each window [L,N] as alone."""
    if len({job.key for job in jobs}) != 1:
        raise ValueError("windows of one batch need the same length, timesteps, η and sampler")
    cond = torch.stack([job.cond for job in jobs])
    mask = torch.stack([job.mask for job in jobs])
    audio = torch.stack([job.feats for job in jobs])
    scales = [job.settings.guidance for job in jobs]
    generators = [torch.Generator().manual_seed(job.seed) for job in jobs]

    # the window's audio and known values prepared once for every step (Denoiser.bind), the
    # steps run by the generator's engine (disenttalk.model.fast; default the module itself)
    model = gen.hot_path
    if hasattr(model, "bind"):
        guided = cfg_bind(model, audio, cond, mask, scales)
    else:  # any other ε-network: called whole at every step
        def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return cfg_eps(model, x, t, audio, cond, mask, scales)

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return gen.diffusion.to_eps(x, t, guided(x, t))

    x = sample(eps_fn, tuple(cond.shape), jobs[0].settings.sampler, generator=generators,
               device=gen.device, known=cond, known_mask=mask, clip_x0=clip_x0)
    x = torch.where(mask.bool(), cond, x)  # known values exactly, not float round trips
    return list(x.unbind(0))


class WindowBatcher:
    """Samples the windows handed to it from any thread in shared batches (see the module).

    No thread of its own: the first caller that finds no batch running leads, waits ``wait_ms``
    for others to join, samples what is queued and hands every caller its window; callers that
    arrive meanwhile wait and the next of them leads the next batch. (PyTorch runs its parallel
    kernels slower from a helper thread than from the thread that asked, so the work stays on
    the callers' threads.)
    """

    def __init__(self, max_batch: int = 16, wait_ms: float = 2.0) -> None:
        if max_batch < 1 or wait_ms < 0:
            raise ValueError(f"need max_batch >= 1 and wait_ms >= 0, got {max_batch}, {wait_ms}")
        self.max_batch, self.wait_s = int(max_batch), float(wait_ms) / 1000.0
        self._queue: list[tuple[Generator, WindowJob, float, Future]] = []
        self._ready = threading.Condition()
        self._leading = False
        self.batches = 0  # batches run, and windows in them (what batching achieved)
        self.windows = 0

    def run(self, gen: Generator, job: WindowJob, clip_x0: float) -> torch.Tensor:
        """Sample ``job`` on ``gen`` with whatever else is ready; blocks until it is done."""
        done: Future = Future()
        with self._ready:
            self._queue.append((gen, job, clip_x0, done))
            self._ready.notify_all()
        while not done.done():
            taken = self._lead()
            if taken:
                try:
                    self._run(taken)
                finally:
                    with self._ready:
                        self._leading = False
                        self._ready.notify_all()
        return done.result()

    def _lead(self) -> list[tuple[Generator, WindowJob, float, Future]]:
        """The next batch if this caller leads it (none is running), else [] once the running
        one ends or this caller's window is done."""
        with self._ready:
            if self._leading or not self._queue:
                self._ready.wait(0.05)
                return []
            self._leading = True
            deadline = time.monotonic() + self.wait_s
            while len(self._queue) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                self._ready.wait(left)
            taken, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            return taken

    def _run(self, taken: list[tuple[Generator, WindowJob, float, Future]]) -> None:
        groups: dict[tuple[Any, ...], list[tuple[Generator, WindowJob, float, Future]]] = {}
        for item in taken:
            gen, job, clip_x0, _ = item
            groups.setdefault((id(gen), clip_x0, job.key), []).append(item)
        for group in groups.values():
            self._sample(group)

    def _sample(self, group: list[tuple[Generator, WindowJob, float, Future]]) -> None:
        gen, _, clip_x0, _ = group[0]
        try:
            windows = sample_windows(gen, [job for _, job, _, _ in group], clip_x0)
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch gets the error
            for *_, done in group:
                done.set_exception(exc)
            return
        with self._ready:
            self.batches += 1
            self.windows += len(group)
        for (*_, done), window in zip(group, windows, strict=True):
            done.set_result(window)
