"""Denoiser: shapes, causality in x_t and audio (look-ahead 0 and 2), null audio, conditioning."""

from __future__ import annotations

import pytest
import torch

from disenttalk.face.regions import RegionSplit
from disenttalk.model.config import DenoiserConfig
from disenttalk.model.denoiser import Denoiser

N, F, T, B = 10, 6, 16, 2
SPLIT = RegionSplit.contiguous(N, 3, 2)


@pytest.fixture(autouse=True)
def _isolated_rng():
    """Module init draws from torch's global RNG; fork it so tests leave it untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def _model(look_ahead=0, num_blocks=3, seed=0):
    torch.manual_seed(seed)
    cfg = DenoiserConfig(dim=16, num_blocks=num_blocks, heads=2, look_ahead=look_ahead,
                         dropout=0.0)
    model = Denoiser(cfg, SPLIT, F).eval()
    torch.nn.init.normal_(model.out.weight, std=0.1)  # zero-init output would hide dependence
    for block in model.blocks:  # FiLM starts as identity; make it depend on t
        torch.nn.init.normal_(block.film.proj.weight, std=0.1)
    return model


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, T, N, generator=g), torch.tensor([3, 250]),
            torch.randn(B, T, F, generator=g))


@pytest.mark.parametrize("num_blocks", [1, 4, 5])
def test_shapes(num_blocks):
    model = _model(num_blocks=num_blocks)
    x, t, a = _inputs()
    assert model(x, t, a).shape == (B, T, N)
    assert model(x, t, None).shape == (B, T, N)
    assert len(model.skips) == num_blocks // 2


def test_zero_init_output():
    model = Denoiser(DenoiserConfig(dim=16, num_blocks=2, heads=2), SPLIT, F)
    x, t, a = _inputs()
    assert torch.count_nonzero(model(x, t, a)) == 0


@pytest.mark.parametrize("look_ahead", [0, 2])
def test_audio_causality(look_ahead):
    model = _model(look_ahead)
    x, t, a = _inputs()
    with torch.no_grad():
        for s in (5, 11):
            a2 = a.clone()
            a2[:, s:] = torch.randn(B, T - s, F)
            y, y2 = model(x, t, a), model(x, t, a2)
            cut = s - look_ahead  # frames < s - look_ahead never see audio ≥ s
            assert torch.allclose(y[:, :cut], y2[:, :cut], atol=1e-5)
            assert not torch.allclose(y[:, cut], y2[:, cut], atol=1e-4)


def test_expression_causality():
    model = _model(look_ahead=2)
    x, t, a = _inputs()
    cond, mask = torch.randn(B, T, N), torch.ones(B, T, N)
    x2, cond2 = x.clone(), cond.clone()
    x2[:, 9:] += 1.0
    cond2[:, 9:] -= 1.0
    with torch.no_grad():
        y, y2 = model(x, t, a, cond, mask), model(x2, t, a, cond2, mask)
    assert torch.allclose(y[:, :9], y2[:, :9], atol=1e-5)
    assert not torch.allclose(y[:, 9:], y2[:, 9:], atol=1e-4)


def test_null_audio_and_per_sample_drop():
    model = _model()
    x, t, a = _inputs()
    with torch.no_grad():
        cond, uncond = model(x, t, a), model(x, t, None)
        mixed = model(x, t, a, drop_audio=torch.tensor([False, True]))
        all_dropped = model(x, t, a, drop_audio=torch.tensor([True, True]))
    assert torch.allclose(mixed[0], cond[0], atol=1e-6)
    assert torch.allclose(mixed[1], uncond[1], atol=1e-6)
    assert torch.allclose(all_dropped, uncond, atol=1e-6)
    assert not torch.allclose(cond, uncond, atol=1e-4)


def test_conditioning_and_timestep_change_the_output():
    model = _model()
    x, t, a = _inputs()
    mask = torch.zeros(B, T, N)
    mask[:, :4] = 1.0  # known prefix
    with torch.no_grad():
        free = model(x, t, a)
        prefixed = model(x, t, a, cond=torch.randn(B, T, N), cond_mask=mask)
        other_t = model(x, torch.tensor([100, 10]), a)
    assert not torch.allclose(free, prefixed, atol=1e-4)
    assert not torch.allclose(free, other_t, atol=1e-4)
    # an all-zero mask hides cond entirely
    with torch.no_grad():
        hidden = model(x, t, a, cond=torch.randn(B, T, N), cond_mask=torch.zeros(B, T, N))
    assert torch.allclose(free, hidden, atol=1e-6)


def test_state_dict_round_trip():
    model, fresh = _model(seed=0), _model(seed=1)
    fresh.load_state_dict(model.state_dict())
    x, t, a = _inputs()
    with torch.no_grad():
        assert torch.equal(model(x, t, a), fresh(x, t, a))
