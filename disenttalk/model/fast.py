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
- ``"auto"``: with one intra-op thread (a Serve replica of under 2 CPUs, where Ray sets
  ``OMP_NUM_THREADS=1``), ``"onnx"`` for every window: there it was 25–32 % faster than eager
  for every shape measured, 1 to 16 guided streams and the 160-frame offline window. With more
  threads, ``"onnx"`` for windows of at most 8 rows, short (streams of up to 4 guided streams)
  or long (an offline window, 14 % faster than eager on 2 threads), ``"eager"`` for wider
  batches, where eager's threaded kernels win (11 % at 16 rows on 2 threads).
- ``"compiled"``: ``torch.compile`` (inductor, C++ kernels; needs a C++ compiler) of the bound
  step, one graph per (batch, frames) shape; the first call of a shape compiles for tens of
  seconds, so it suits fixed offline shapes. ε̂ within 1e-5 of eager; batching invariance is
  not promised (fused kernels may split work by the batch size).

See :mod:`disenttalk.model.benchmark_hot_path` for what each mode measures.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from disenttalk.model.denoiser import BoundDenoiser, Denoiser, bound_step

Mode = Literal["eager", "onnx", "auto", "compiled"]
MODES: tuple[str, ...] = ("eager", "onnx", "auto", "compiled")
AUTO_ONNX_ROWS = 8  # "auto" on 2+ threads: the most rows (2 per guided stream) a window runs by ONNX


class Accelerated:
    """A denoiser whose :meth:`bind` runs the bound step with a faster engine; with
    ``wide_step``, windows of more than ``max_rows`` rows run that one instead."""

    def __init__(self, denoiser: Denoiser, step: Any, mode: str, wide_step: Any = None,
                 max_rows: int = 1 << 30) -> None:
        self.denoiser, self.step, self.mode = denoiser, step, mode
        self.wide_step, self.max_rows = wide_step, max_rows

    def bind(self, audio: torch.Tensor | None, cond: torch.Tensor | None,
             cond_mask: torch.Tensor | None, drop_audio: torch.Tensor | None = None
             ) -> BoundDenoiser:
        """As :meth:`Denoiser.bind`, the step run by this engine."""
        bound = self.denoiser.bind(audio, cond, cond_mask, drop_audio)
        wide = self.wide_step is not None and bound.batch > self.max_rows
        bound.step = self.wide_step if wide else self.step
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
    if mode == "auto":  # benchmark_hot_path: at 1 thread ONNX wins at every shape; at 2 threads
        # eager wins from 16 rows on (8 guided streams)
        step = OnnxStep(denoiser, threads)
        if (threads or torch.get_num_threads()) == 1:
            return Accelerated(denoiser, step, mode)
        return Accelerated(denoiser, step, mode, wide_step=bound_step, max_rows=AUTO_ONNX_ROWS)
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
    """bound_step run by ONNX Runtime; exported at the first call, dynamic in batch and frames."""

    def __init__(self, model: Denoiser, threads: int | None = None) -> None:
        self.model, self.threads = model, threads
        self.session: Any = None
        self.inputs: list[str] = []

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
            self._export(args)
        by_name = dict(zip(_names(len(kv)), args, strict=True))
        feed = {k: np.ascontiguousarray(by_name[k].detach().numpy()) for k in self.inputs}
        return torch.from_numpy(self.session.run(None, feed)[0])
