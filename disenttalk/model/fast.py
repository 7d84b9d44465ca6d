"""Faster sampler steps for a trained denoiser: ``accelerate(denoiser, mode).bind(...)``.

Every mode has :meth:`Denoiser.bind`'s API: ``bind(audio, cond, cond_mask, drop_audio=None)``
returns ``step(x_t, t) → ε̂`` for one window; they differ only in what runs that step.

- ``"eager"``: the plain module (PyTorch ops one by one). ε̂ within 1e-5 of ``forward``;
  a row's numbers never depend on the rows beside it (bit-identical batching).
- ``"onnx"``: the bound step exported once (TorchScript → ONNX, batch and frames dynamic, so
  any window shape runs without a new export) and run by ONNX Runtime's CPU kernels with their
  graph fusions. ε̂ within 1e-5 of eager. A row's numbers did not depend on the rows beside it
  on this machine's CPU (MLAS kernels; tested), but ONNX Runtime does not promise it. The
  weights are those of the first ``bind`` (a snapshot): for inference, not training. CPU only.
- ``"auto"``: ONNX Runtime on one thread per part of the window's rows. With one intra-op
  thread (a Serve replica of under 2 CPUs, where Ray sets ``OMP_NUM_THREADS=1``) that is
  ``"onnx"`` for every window: there it was 25–32 % faster than eager for every shape measured,
  1 to 16 guided streams and the 160-frame offline window. With N threads a window's rows are
  split into N parts (a guided window's conditional and unconditional rows apart) run at once,
  each by a single-threaded session (:class:`OnnxStep` ``parts``): small matrices gain little
  from a second thread inside one product, two products side by side keep both cores busy
  (on 2 threads the offline window 87 ms against 111 threaded ONNX Runtime and 109 eager, 8
  guided streams 73 against 88 and 80; one stream's window, too small to split, runs whole).
- ``"compiled"``: ``torch.compile`` (inductor, C++ kernels; needs a C++ compiler) of the bound
  step, one graph per (batch, frames) shape; the first call of a shape compiles for tens of
  seconds, so it suits fixed offline shapes. ε̂ within 1e-5 of eager; batching invariance is
  not promised (fused kernels may split work by the batch size).

See :mod:`disenttalk.model.benchmark_hot_path` for what each mode measures.
"""

from __future__ import annotations

import io
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from disenttalk.model.denoiser import BoundDenoiser, Denoiser, bound_step

Mode = Literal["eager", "onnx", "auto", "compiled"]
MODES: tuple[str, ...] = ("eager", "onnx", "auto", "compiled")
MIN_SPLIT = 64  # row-frames (rows × frames) from which OnnxStep splits a window's rows


class Accelerated:
    """A denoiser whose :meth:`bind` runs the bound step with a faster engine."""

    def __init__(self, denoiser: Denoiser, step: Any, mode: str) -> None:
        self.denoiser, self.step, self.mode = denoiser, step, mode

    def bind(self, audio: torch.Tensor | None, cond: torch.Tensor | None,
             cond_mask: torch.Tensor | None, drop_audio: torch.Tensor | None = None
             ) -> BoundDenoiser:
        """As :meth:`Denoiser.bind`, the step run by this engine."""
        bound = self.denoiser.bind(audio, cond, cond_mask, drop_audio)
        bound.step = self.step
        return bound


def accelerate(denoiser: Denoiser, mode: Mode = "eager", *, threads: int | None = None
               ) -> Denoiser | Accelerated:
    """``denoiser`` with a ``bind`` whose steps run in ``mode`` (see the module doc); "eager"
    returns the module itself. ``threads``: ONNX Runtime's intra-op threads (default
    torch's). The denoiser is put in eval mode."""
    denoiser.eval()
    if mode == "eager":
        return denoiser
    if mode == "onnx":
        return Accelerated(denoiser, OnnxStep(denoiser, threads), mode)
    if mode == "auto":  # benchmark_hot_path: single-threaded ONNX Runtime, the rows split
        return Accelerated(denoiser, OnnxStep(denoiser, 1, parts=threads or torch.get_num_threads()), mode)
    if mode == "compiled":
        return Accelerated(denoiser, torch.compile(bound_step, dynamic=False), mode)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class _Flat(nn.Module):
    """bound_step over a flat list of tensors (what an exporter traces)."""

    def __init__(self, model: Denoiser) -> None:
        super().__init__()
        self.model, self.depth = model, len(model.blocks)

    def forward(self, x_t: torch.Tensor, fixed: torch.Tensor, x_weight: torch.Tensor,
                self_bias: torch.Tensor, cross_bias: torch.Tensor, *rest: torch.Tensor
                ) -> torch.Tensor:
        n = self.depth
        kv, kernels, film = list(rest[:n]), list(rest[n:2 * n]), rest[2 * n:]
        pairs = [(film[2 * i], film[2 * i + 1]) for i in range(n)]
        return bound_step(self.model, x_t, fixed, x_weight, kv, kernels,
                          (self_bias, cross_bias), pairs)


def _names(depth: int) -> list[str]:
    return (["x_t", "fixed", "x_weight", "self_bias", "cross_bias"]
            + [f"kv{i}" for i in range(depth)] + [f"kernel{i}" for i in range(depth)]
            + [f"film{i}_{p}" for i in range(depth) for p in ("gamma", "beta")])


class OnnxStep:
    """bound_step run by ONNX Runtime; exported at the first call, dynamic in batch and frames.

    ``parts`` > 1: a window's rows are split into up to that many contiguous parts, evaluated at
    once (the caller's thread and ``parts`` − 1 workers; ONNX Runtime runs without the GIL) and
    joined; a window of under ``MIN_SPLIT`` row-frames (one guided stream's) runs whole, where
    handing a part to a worker costs more than it saves. A row's numbers are the same whichever
    part it is in (see the module's note on rows), so the split changes no result.
    """

    def __init__(self, model: Denoiser, threads: int | None = None, parts: int = 1) -> None:
        self.model, self.threads, self.parts = model, threads, max(1, parts)
        self.session: Any = None
        self.inputs: list[str] = []
        self._export_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self.parts - 1, "onnx-rows") if self.parts > 1 else None

    def _export(self, args: tuple[torch.Tensor, ...]) -> None:
        import onnxruntime as ort

        names = _names(len(self.model.blocks))
        frames = {1: "frames", 2: "frames"}
        dynamic = {"x_t": {0: "batch", 1: "frames"}, "fixed": {0: "rows"},
                   "self_bias": frames, "cross_bias": frames,
                   **{f"kv{i}": {1: "batch", 3: "frames"} for i in range(len(self.model.blocks))}}
        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's notes on traced shapes
            torch.onnx.export(_Flat(self.model).eval(), args, buffer, dynamo=False,
                              input_names=names, output_names=["eps"], dynamic_axes=dynamic,
                              opset_version=17)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # no busy-waiting between runs: spinning workers took the cores from torch's own threads
        # (the sampler between steps, other engines), 2× slower windows at 2 threads on 2 cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(buffer.getvalue(), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]  # unused ones are pruned

    def __call__(self, model: Denoiser, x_t: torch.Tensor, fixed: torch.Tensor,
                 x_weight: torch.Tensor, kv: list[torch.Tensor], kernels: list[torch.Tensor],
                 biases: tuple[torch.Tensor, torch.Tensor],
                 film: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        if x_t.device.type != "cpu":
            raise ValueError("the onnx mode runs on the CPU only")
        args = (x_t, fixed, x_weight, *biases, *kv, *kernels, *[c for pair in film for c in pair])
        if self.session is None:
            with self._export_lock:
                if self.session is None:
                    self._export(args)
        b, frames = x_t.shape[:2]
        parts = min(self.parts, b) if b * frames >= MIN_SPLIT else 1
        if parts == 1:
            return self._run(args)
        cuts = [b * i // parts for i in range(parts + 1)]
        fixed_rows = fixed.view(b, frames, -1)

        def rows(lo: int, hi: int) -> tuple[torch.Tensor, ...]:
            def cut(c: torch.Tensor) -> torch.Tensor:  # FiLM's (γ, β): [1|B,1,D]
                return c if c.shape[0] == 1 else c[lo:hi]
            return (x_t[lo:hi], fixed_rows[lo:hi].reshape((hi - lo) * frames, -1), x_weight,
                    *biases, *[k[:, lo:hi] for k in kv], *kernels,
                    *[cut(c) for pair in film for c in pair])

        others = [self._pool.submit(self._run, rows(lo, hi))
                  for lo, hi in zip(cuts[1:-1], cuts[2:], strict=True)]
        first = self._run(rows(cuts[0], cuts[1]))
        return torch.cat([first, *(f.result() for f in others)])

    def _run(self, args: tuple[torch.Tensor, ...]) -> torch.Tensor:
        by_name = dict(zip(_names(len(self.model.blocks)), args, strict=True))
        feed = {k: np.ascontiguousarray(by_name[k].detach().numpy()) for k in self.inputs}
        return torch.from_numpy(self.session.run(None, feed)[0])
