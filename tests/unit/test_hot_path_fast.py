"""Accelerated bound steps (``fast.accelerate``) and guidance over a bound window (``cfg_bind``).

Tolerances: every mode's ε̂ within 1e-5 (absolute) of the eager bound step on a network of the
shipped size; ``cfg_bind`` within 1e-5 of ``cfg_eps`` (the bound step's own tolerance).
"""

from __future__ import annotations

import threading

import pytest
import torch

from disenttalk.model.denoiser import Denoiser
from disenttalk.model.diffusion import cfg_bind, cfg_eps
from disenttalk.model.fast import Accelerated, accelerate
from tests.unit import test_hot_path
from tests.unit.test_hot_path import BOUND_ATOL, window

MODE_ATOL = 1e-5


@pytest.fixture(scope="module")
def model() -> Denoiser:
    """The shipped architecture with random weights (as in test_hot_path)."""
    return test_hot_path.model.__wrapped__()


def _eps(bindable, w: dict[str, torch.Tensor], t: int) -> torch.Tensor:
    bound = bindable.bind(w["audio"], w["cond"], w["mask"], w["drop"])
    return bound(w["x"], torch.full((w["x"].shape[0],), t))


def test_eager_is_the_module_and_unknown_modes_fail(model):
    assert accelerate(model, "eager") is model
    with pytest.raises(ValueError, match="mode must be one of"):
        accelerate(model, "tensorrt")


def test_onnx_mode_matches_eager_for_any_window_shape(model):
    fast = accelerate(model, "onnx", threads=1)
    assert isinstance(fast, Accelerated)
    with torch.no_grad():
        for batch, frames, t in [(2, 18, 399), (6, 18, 12), (2, 162, 120), (4, 9, 0)]:
            w = window(batch, frames, seed=frames)
            assert (_eps(fast, w, t) - _eps(model, w, t)).abs().max() <= MODE_ATOL


def test_onnx_mode_rows_do_not_depend_on_the_batch(model):
    fast = accelerate(model, "onnx", threads=1)
    w = window(16, 18, seed=3)
    with torch.no_grad():
        whole = _eps(fast, w, 77)
        for i in range(8):
            rows = slice(2 * i, 2 * i + 2)
            assert torch.equal(_eps(fast, {k: v[rows] for k, v in w.items()}, 77), whole[rows])


def test_auto_mode_on_threads_splits_the_rows_and_gives_the_rows_of_the_whole(model):
    fast = accelerate(model, "auto", threads=2)
    one = accelerate(model, "onnx", threads=1)
    assert fast.step.parts == 2 and fast.step.threads == 1
    with torch.no_grad():  # one stream's window whole; an offline window and 5 streams split
        for w in (window(2, 18, seed=1), window(2, 162, seed=2), window(10, 18, seed=4)):
            assert (_eps(fast, w, 5) - _eps(model, w, 5)).abs().max() <= MODE_ATOL
            assert torch.equal(_eps(fast, w, 5), _eps(one, w, 5))
        w = window(5, 18, seed=6)  # odd rows: parts of 2 and 3
        for t in (399, 5):
            assert torch.equal(_eps(fast, w, t), _eps(one, w, t))


def test_a_split_step_runs_its_parts_beside_the_caller_and_hands_back_a_failure(model, monkeypatch):
    fast = accelerate(model, "auto", threads=3)
    w = window(6, 18, seed=7)
    with torch.no_grad():
        _eps(fast, w, 3)  # exported
        seen: list[tuple[int, str]] = []
        run = fast.step._run

        def spy(args):
            seen.append((args[0].shape[0], threading.current_thread().name))
            return run(args)

        monkeypatch.setattr(fast.step, "_run", spy)
        _eps(fast, w, 3)
        assert sorted(n for n, _ in seen) == [2, 2, 2]
        caller = threading.current_thread().name  # one part here, the others on workers
        assert [name for _, name in seen].count(caller) == 1

        def broken(args):
            raise RuntimeError("a part failed")

        monkeypatch.setattr(fast.step, "_run", broken)
        with pytest.raises(RuntimeError, match="a part failed"):
            _eps(fast, w, 3)


def test_auto_mode_on_one_thread_runs_every_window_by_onnx(model):
    fast = accelerate(model, "auto", threads=1)
    with torch.no_grad():
        for w in (window(2, 18, seed=1), window(2, 162, seed=2), window(10, 18, seed=4)):
            assert fast.bind(w["audio"], w["cond"], w["mask"]).step is fast.step
            assert (_eps(fast, w, 5) - _eps(model, w, 5)).abs().max() <= MODE_ATOL


@pytest.mark.slow
def test_compiled_mode_matches_eager(model):
    fast = accelerate(model, "compiled")
    w = window(2, 18, seed=5)
    with torch.no_grad():
        assert (_eps(fast, w, 30) - _eps(model, w, 30)).abs().max() <= MODE_ATOL


@pytest.mark.parametrize("scale", [2.0, 1.0, [2.0, 1.0, 3.5]])
def test_cfg_bind_is_cfg_eps_with_the_window_bound(model, scale):
    w = window(3, 18, seed=9)
    with torch.no_grad():
        eps_fn = cfg_bind(model, w["audio"], w["cond"], w["mask"], scale)
        for t in (399, 40):
            ref = cfg_eps(model, w["x"], t, w["audio"], w["cond"], w["mask"], scale)
            assert (eps_fn(w["x"], t) - ref).abs().max() <= BOUND_ATOL
        onnx = cfg_bind(accelerate(model, "onnx", threads=1), w["audio"], w["cond"], w["mask"],
                        scale)
        assert (onnx(w["x"], 40) - eps_fn(w["x"], 40)).abs().max() <= MODE_ATOL
