"""The sampling hot path: ``Denoiser.bind`` is ``forward`` with a window's inputs fixed.

Tolerance: the bound step splits the input and region embeddings (linear in [x_t, cond·mask,
mask]) into an x_t part and a fixed part, which changes only the order of a sum: ε̂ within
1e-5 (absolute) of ``forward`` on a network of the shipped size. Batching is exact: a row's
numbers do not depend on the rows beside it (torch.equal).
"""

from __future__ import annotations

import pytest
import torch

from disenttalk.face.regions import RegionSplit
from disenttalk.model.config import DenoiserConfig
from disenttalk.model.denoiser import Denoiser

N, F, LOOK_AHEAD = 24, 160, 2  # the shipped model's parameter and mel feature dims
SPLIT = RegionSplit.contiguous(N, k_lip=13, k_eye=8)
BOUND_ATOL = 1e-5


@pytest.fixture(scope="module")
def model() -> Denoiser:
    """The shipped architecture (configs/model.yaml) with random weights everywhere, output and
    FiLM included (their zero initialisation would hide differences)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        den = Denoiser(DenoiserConfig(look_ahead=LOOK_AHEAD), SPLIT, F)
        torch.nn.init.normal_(den.out.weight, std=0.1)
        for block in den.blocks:
            torch.nn.init.normal_(block.film.proj.weight, std=0.05)
    return den.eval()


def window(batch: int, frames: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A guided batch: rows 2i (audio) and 2i+1 (∅) of window i, a known prefix and eye dims."""
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(batch, frames, N, generator=g)
    mask = torch.zeros(batch, frames, N)
    mask[:, :5] = 1.0
    mask[:, :, list(SPLIT.eye)] = (torch.rand(batch, 1, 1, generator=g) > 0.5).float()
    return {"x": torch.randn(batch, frames, N, generator=g),
            "audio": torch.randn(batch, frames, F, generator=g), "cond": cond, "mask": mask,
            "drop": torch.arange(batch) % 2 == 1}


@pytest.mark.parametrize("frames", [16 + LOOK_AHEAD, 40])
@pytest.mark.parametrize("t", [[399, 399], [7, 7], [3, 250]])
def test_bound_step_equals_forward(model, frames, t):
    w, t = window(2, frames), torch.tensor(t)
    with torch.no_grad():
        ref = model(w["x"], t, w["audio"], w["cond"], w["mask"], w["drop"])
        bound = model.bind(w["audio"], w["cond"], w["mask"], w["drop"])
        out = bound(w["x"], t)
        again = bound(w["x"], t)  # FiLM's (γ, β) kept from the first call at this t
    assert (out - ref).abs().max() <= BOUND_ATOL
    assert torch.equal(out, again)
    assert ref.abs().mean() > 0.1  # a network that does something


@pytest.mark.parametrize("case", ["no_cond", "no_audio", "no_drop"])
def test_bound_step_without_optional_inputs(model, case):
    w, t = window(2, 18), torch.tensor([50, 50])
    audio = None if case == "no_audio" else w["audio"]
    cond, mask = (None, None) if case == "no_cond" else (w["cond"], w["mask"])
    drop = None if case == "no_drop" else w["drop"]
    with torch.no_grad():
        ref = model(w["x"], t, audio, cond, mask, drop)
        out = model.bind(audio, cond, mask, drop)(w["x"], t)
    assert (out - ref).abs().max() <= BOUND_ATOL


def test_bound_step_checks_the_window_shape(model):
    w = window(2, 18)
    bound = model.bind(w["audio"], w["cond"], w["mask"], w["drop"])
    with pytest.raises(ValueError, match="bound to"):
        bound(torch.zeros(4, 18, N), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="audio or cond"):
        model.bind(None, None, None)


@pytest.mark.parametrize("frames", [16 + LOOK_AHEAD, 160 + LOOK_AHEAD])
def test_a_rows_numbers_do_not_depend_on_the_batch(model, frames):
    """Rows [2i, 2i+1] alone give exactly what they give inside a batch of 2B rows (B ≤ 12), all
    rows at one timestep: through ``forward`` and through the bound step."""
    sizes = [12] if frames < 100 else [3]
    for batch in sizes:
        w, t = window(2 * batch, frames, seed=batch), torch.full((2 * batch,), 123)
        with torch.no_grad():
            whole = model.bind(w["audio"], w["cond"], w["mask"], w["drop"])(w["x"], t)
            whole_fwd = model(w["x"], t, w["audio"], w["cond"], w["mask"], w["drop"])
            for i in range(batch):
                rows = slice(2 * i, 2 * i + 2)
                part = {k: v[rows] for k, v in w.items()}
                alone = model.bind(part["audio"], part["cond"], part["mask"], part["drop"])
                assert torch.equal(alone(part["x"], t[rows]), whole[rows])
                assert torch.equal(model(part["x"], t[rows], part["audio"], part["cond"],
                                         part["mask"], part["drop"]), whole_fwd[rows])
