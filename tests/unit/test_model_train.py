"""Denoiser training steps: conditioning masks, reproducibility, frozen expert, overfitting a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disenttalk.face.regions import RegionSplit
from disenttalk.model.config import DenoiserConfig, SyncConfig
from disenttalk.model.denoiser import Denoiser
from disenttalk.model.diffusion import DiffusionConfig, GaussianDiffusion
from disenttalk.model.sync import SyncExpert
from disenttalk.model.train import (
    denoiser_eval_step,
    denoiser_train_step,
    random_cond_mask,
)

N, F, T, B = 10, 8, 24, 4
SPLIT = RegionSplit(lip=(0, 4, 5), eye=(1, 7), global_=(2, 3, 6, 8, 9))


@pytest.fixture(autouse=True)
def _isolated_rng():
    """Module init draws from torch's global RNG; fork it so tests leave it untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(B, T, F, generator=g)
    expression = torch.cumsum(0.3 * torch.randn(B, T, N, generator=g), dim=1)  # smooth motion
    return {"expression": expression, "audio": audio}


def _setup(dropout=0.0):
    denoiser = Denoiser(DenoiserConfig(dim=32, num_blocks=2, heads=2, dropout=dropout), SPLIT, F)
    diffusion = GaussianDiffusion(DiffusionConfig(num_timesteps=100))
    return denoiser, diffusion


def test_cond_mask_prefix_and_regions():
    g = torch.Generator().manual_seed(0)
    mask = random_cond_mask(torch.Size((64, T, N)), SPLIT, g, prefix_prob=0.5, max_prefix=6,
                            region_prob=0.3)
    assert mask.shape == (64, T, N) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert not mask[:, 6:, list(SPLIT.lip)].any()  # lips past the prefix: always unknown
    prefix_len = mask[:, :, list(SPLIT.lip)].all(-1).sum(1)  # known lip frames = the prefix
    assert prefix_len.max() <= 6 and 0.25 < (prefix_len > 0).float().mean() < 0.75
    for region in ("eye", "global"):
        dims = list(SPLIT.indices(region))
        known = mask[:, :, dims].all(-1).all(-1)  # the region known on every frame
        assert 0.1 < known.float().mean() < 0.55
    none = random_cond_mask(torch.Size((8, T, N)), SPLIT, g, prefix_prob=0.0, max_prefix=6,
                            region_prob=0.0)
    assert not none.any()


def test_train_step_is_reproducible_from_the_generator():
    results = []
    for _ in range(2):
        with torch.random.fork_rng():
            torch.manual_seed(3)
            denoiser, diffusion = _setup()
        opt = torch.optim.Adam(denoiser.parameters(), lr=1e-3)
        out = denoiser_train_step(denoiser, diffusion, _batch(), opt, split=SPLIT,
                                  generator=torch.Generator().manual_seed(7))
        results.append((out, next(iter(denoiser.parameters())).detach().clone()))
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])
    assert set(results[0][0]) == {"loss", "noise_loss", "velocity_loss", "sync_loss", "grad_norm"}


def test_sync_loss_flows_to_the_denoiser_and_not_the_expert():
    denoiser, diffusion = _setup()
    expert = SyncExpert(SyncConfig(embed_dim=16, hidden=32), F, len(SPLIT.lip))
    before = {k: v.clone() for k, v in expert.state_dict().items()}
    opt = torch.optim.Adam(denoiser.parameters(), lr=1e-3)
    out = denoiser_train_step(denoiser, diffusion, _batch(), opt, split=SPLIT, expert=expert,
                              sync_weight=0.5, audio_drop_prob=0.0,
                              generator=torch.Generator().manual_seed(0))
    assert out["sync_loss"] > 0 and out["loss"] == pytest.approx(
        out["noise_loss"] + 0.5 * out["sync_loss"], rel=1e-5)
    assert all(p.grad is None for p in expert.parameters())
    assert all(torch.equal(before[k], v) for k, v in expert.state_dict().items())
    # the sync term alone produces gradients in the denoiser's output layer
    denoiser.zero_grad()
    from disenttalk.model.losses import sync_loss
    x0_hat = denoiser(torch.randn(B, T, N), torch.tensor([5, 5, 5, 5]), _batch()["audio"])
    sync_loss(expert, x0_hat[..., list(SPLIT.lip)], _batch()["audio"]).backward()
    assert denoiser.out.weight.grad.abs().sum() > 0


def test_eval_step_is_deterministic_and_leaves_weights():
    denoiser, diffusion = _setup(dropout=0.1)
    state = {k: v.clone() for k, v in denoiser.state_dict().items()}
    a = denoiser_eval_step(denoiser, diffusion, _batch(), split=SPLIT,
                           generator=torch.Generator().manual_seed(1))
    b = denoiser_eval_step(denoiser, diffusion, _batch(), split=SPLIT,
                           generator=torch.Generator().manual_seed(1))
    assert a == b and np.isfinite(a["noise_loss"])
    assert all(torch.equal(state[k], v) for k, v in denoiser.state_dict().items())


def test_denoiser_overfits_one_batch():
    denoiser, diffusion = _setup()
    opt = torch.optim.Adam(denoiser.parameters(), lr=2e-3)
    batch = _batch()
    losses = []
    for _ in range(60):  # ~40 steps reach a 10x drop
        # the same generator seed every step: the same t, noise and masks, i.e. one fixed batch
        out = denoiser_train_step(denoiser, diffusion, batch, opt, split=SPLIT,
                                  audio_drop_prob=0.0, generator=torch.Generator().manual_seed(0),
                                  grad_clip=10.0)
        losses.append(out["noise_loss"])
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


@pytest.mark.parametrize("prediction", ["eps", "x0"])
def test_every_denoiser_parameter_gets_a_gradient_without_audio_dropout(prediction):
    """DDP runs without find_unused_parameters: a step where no sample drops its audio must still
    reach every parameter (the null-audio embedding included)."""
    torch.manual_seed(0)
    denoiser = Denoiser(DenoiserConfig(dim=32, num_blocks=2, heads=2, region_dim=16), SPLIT, F)
    diffusion = GaussianDiffusion(DiffusionConfig(num_timesteps=50, prediction=prediction))
    opt = torch.optim.SGD(denoiser.parameters(), lr=0.0)
    denoiser_train_step(denoiser, diffusion, _batch(), opt, split=SPLIT, audio_drop_prob=0.0,
                        generator=torch.Generator().manual_seed(1), velocity_weight=0.5,
                        lip_weight=2.0)
    missing = [n for n, p in denoiser.named_parameters() if p.grad is None]
    assert not missing


def test_x0_prediction_learns_the_clean_sequence_and_weights_lip_dims():
    """With the x0 target the loss is the error of x0̂ itself; lip_weight scales the lip dims' share."""
    torch.manual_seed(0)
    diffusion = GaussianDiffusion(DiffusionConfig(num_timesteps=50, prediction="x0"))

    class Perfect(torch.nn.Module):  # returns the clean sequence it was handed as cond
        def forward(self, x_t, t, audio, cond=None, cond_mask=None, drop_audio=None):
            return cond + 0.0 * self.w

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

    from disenttalk.model.train import _denoiser_losses

    out = _denoiser_losses(Perfect(), diffusion, _batch(), split=SPLIT, expert=None,
                           sync_weight=0.0, audio_drop_prob=0.0,
                           generator=torch.Generator().manual_seed(2), mask_kwargs=None,
                           velocity_weight=1.0)
    assert float(out["noise_loss"].detach()) == pytest.approx(0.0, abs=1e-10)
    assert float(out["velocity_loss"].detach()) == pytest.approx(0.0, abs=1e-10)
