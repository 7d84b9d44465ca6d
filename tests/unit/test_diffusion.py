"""Diffusion process and samplers: schedule identities, sampler equivalences, guidance (Eq. 3, 9)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from disenttalk.config import ConfigError
from disenttalk.model.diffusion import (
    DDIMSampler,
    DDPMSampler,
    DiffusionConfig,
    GaussianDiffusion,
    cfg_eps,
    make_sampler,
    sample,
)


class AudioDenoiser(nn.Module):
    """Stand-in ε-network with the Denoiser's call signature and a learned null audio embedding."""

    def __init__(self, n: int = 6, f: int = 4) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(f, n, generator=g))
        self.null = nn.Parameter(torch.randn(f, generator=g))

    def forward(self, x_t, t, audio, cond=None, cond_mask=None, drop_audio=None):
        B, T, _ = x_t.shape
        if audio is None:
            audio = self.null.expand(B, T, -1)
        elif drop_audio is not None:
            audio = torch.where(drop_audio[:, None, None], self.null.expand(B, T, -1), audio)
        return torch.tanh(audio @ self.proj + 0.1 * x_t) * (1.0 + t[:, None, None] / 400.0)


@pytest.fixture(scope="module", params=["linear", "cosine"])
def diffusion(request) -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig(num_timesteps=50, schedule=request.param))


def test_config_defaults_and_strictness():
    cfg = DiffusionConfig()
    assert cfg.num_timesteps == 400 and cfg.schedule == "linear"
    assert DiffusionConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError):
        DiffusionConfig.from_dict({"schedule": "quadratic"})


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_default_schedule_ends_in_noise(schedule):
    d = GaussianDiffusion(DiffusionConfig(schedule=schedule))
    abar = d.alphas_cumprod
    assert abar.dtype == torch.float32 and abar.shape == (400,)
    assert torch.all(abar[1:] < abar[:-1])  # strictly decreasing
    assert abar[0] > 0.999 and abar[-1] < 1e-3  # starts at the data, ends at N(0, I)


def test_q_sample_at_t0_is_nearly_x0(diffusion):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 10, 6, generator=g)
    noise = torch.randn(4, 10, 6, generator=g)
    t0 = torch.zeros(4, dtype=torch.long)
    xt = diffusion.q_sample(x0, t0, noise)
    beta0 = float(diffusion.betas[0])
    assert beta0 < 0.01
    # x_0 = √(1-β_0) x0 + √β_0 ε: off from x0 by at most a few √β_0
    assert torch.allclose(xt, x0, atol=4 * beta0**0.5)
    # and at t = T-1 the sample is almost pure noise
    tT = torch.full((4,), diffusion.num_timesteps - 1)
    assert torch.allclose(diffusion.q_sample(x0, tT, noise), noise, atol=0.05)


def test_q_sample_marginal_statistics():
    d = GaussianDiffusion(DiffusionConfig(num_timesteps=50))
    g = torch.Generator().manual_seed(2)
    x0 = torch.full((20000, 1, 1), 2.0)
    t = torch.full((20000,), 20)
    xt = d.q_sample(x0, t, torch.randn(x0.shape, generator=g))
    abar = d.alphas_cumprod[20]
    assert abs(xt.mean() - 2.0 * abar.sqrt()) < 0.03
    assert abs(xt.var() - (1 - abar)) < 0.03


def test_x0_eps_round_trip(diffusion):
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(5, 7, 6, generator=g)
    eps = torch.randn(5, 7, 6, generator=g)
    t = torch.randint(0, diffusion.num_timesteps, (5,), generator=g)
    xt = diffusion.q_sample(x0, t, eps)
    assert torch.allclose(diffusion.predict_x0(xt, t, eps), x0, atol=1e-4)
    assert torch.allclose(diffusion.predict_eps(xt, t, x0), eps, atol=1e-3)


def test_timesteps_descend_and_start_at_noise(diffusion):
    s = DDIMSampler(diffusion)
    s.set_timesteps(7)
    ts = s.timesteps
    assert ts.dtype == torch.long and len(ts) == 7
    assert ts[0] == diffusion.num_timesteps - 1 and torch.all(ts[1:] < ts[:-1]) and ts[-1] >= 0
    with pytest.raises(ValueError):
        s.set_timesteps(diffusion.num_timesteps + 1)
    with pytest.raises(ValueError):
        s.step(torch.zeros(1), 3 if 3 not in ts else -5, torch.zeros(1))


@pytest.mark.parametrize("k", [1, 2, 10, 20, 49, 50])
def test_quadratic_spacing_is_dense_near_the_data(diffusion, k):
    T = diffusion.num_timesteps  # 50
    s = DDIMSampler(diffusion)
    s.set_timesteps(k, "quadratic")
    ts = s.timesteps.numpy()
    assert len(ts) == k and ts[0] == T - 1 and (ts[1:] < ts[:-1]).all() and ts[-1] >= 0
    if 2 < k < T // 2:  # gaps grow with t: the last step is shorter than the first
        assert ts[-2] - ts[-1] < ts[0] - ts[1]
        uniform = DDIMSampler(diffusion)
        uniform.set_timesteps(k)
        assert ts[-1] < uniform.timesteps[-1]
    with pytest.raises(ValueError, match="spacing"):
        s.set_timesteps(k, "cubic")


def test_ddim_with_fixed_generator_is_deterministic(diffusion):
    model = AudioDenoiser()
    audio = torch.randn(2, 9, 4, generator=torch.Generator().manual_seed(4))
    fn = lambda x, t: cfg_eps(model, x, t, audio, scale=2.0)  # noqa: E731
    for eta in (0.0, 0.5):
        sampler = make_sampler(diffusion, "ddim", steps=10, eta=eta)
        a = sample(fn, (2, 9, 6), sampler, generator=torch.Generator().manual_seed(5))
        b = sample(fn, (2, 9, 6), sampler, generator=torch.Generator().manual_seed(5))
        c = sample(fn, (2, 9, 6), sampler, generator=torch.Generator().manual_seed(6))
        assert torch.equal(a, b) and not torch.allclose(a, c)


def test_ddim_eta1_all_steps_equals_ddpm_posterior(diffusion):
    """DDIM with k=T, eta=1 is the DDPM posterior: same mean and variance, so the same step."""
    ddpm, ddim = DDPMSampler(diffusion), DDIMSampler(diffusion, eta=1.0)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 8, 6, generator=g)
    eps = torch.randn(3, 8, 6, generator=g)
    for t in (diffusion.num_timesteps - 1, 17, 1, 0):
        a = ddpm.step(eps, t, x, generator=torch.Generator().manual_seed(t))
        b = ddim.step(eps, t, x, generator=torch.Generator().manual_seed(t))
        assert torch.allclose(a, b, atol=1e-5), t
    # the whole chain too, with one generator shared by the noise draws
    model = AudioDenoiser()
    audio = torch.randn(3, 8, 4, generator=g)
    fn = lambda x, t: model(x, t, audio)  # noqa: E731
    a = sample(fn, (3, 8, 6), ddpm, generator=torch.Generator().manual_seed(8))
    b = sample(fn, (3, 8, 6), ddim, generator=torch.Generator().manual_seed(8))
    assert torch.allclose(a, b, atol=1e-4)


def test_last_step_returns_predicted_x0(diffusion):
    """At t=0 the step lands on clean data: the output is exactly x0̂ (no noise added)."""
    g = torch.Generator().manual_seed(9)
    x0 = torch.randn(2, 5, 6, generator=g)
    eps = torch.randn(2, 5, 6, generator=g)
    t = torch.zeros(2, dtype=torch.long)
    xt = diffusion.q_sample(x0, t, eps)
    for sampler in (DDPMSampler(diffusion), DDIMSampler(diffusion, eta=1.0)):
        assert torch.allclose(sampler.step(eps, 0, xt, generator=g), x0, atol=1e-4)


def test_ddim_eta0_exact_eps_recovers_x0_in_one_step(diffusion):
    """With the true ε, a single DDIM step from T-1 to clean data recovers x0."""
    g = torch.Generator().manual_seed(10)
    x0, eps = torch.randn(2, 5, 6, generator=g), torch.randn(2, 5, 6, generator=g)
    s = DDIMSampler(diffusion)
    s.set_timesteps(1)
    t = s.timesteps[0]
    xt = diffusion.q_sample(x0, t.expand(2), eps)
    assert torch.allclose(s.step(eps, t, xt), x0, atol=1e-3)


def test_guidance_scales():
    """Eq. 9: s=1 is the conditional prediction, s=0 the unconditional, s linear in between."""
    model = AudioDenoiser()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 6, 6, generator=g)
    audio = torch.randn(3, 6, 4, generator=g)
    t = torch.tensor([5, 100, 399])
    cond = model(x, t, audio)
    uncond = model(x, t, None)
    assert not torch.allclose(cond, uncond)
    assert torch.equal(cfg_eps(model, x, t, audio, scale=1.0), cond)
    assert torch.allclose(cfg_eps(model, x, t, audio, scale=0.0), uncond, atol=1e-6)
    assert torch.allclose(cfg_eps(model, x, t, audio, scale=2.5), 2.5 * cond - 1.5 * uncond, atol=1e-5)
    # a scalar timestep broadcasts over the batch
    assert torch.allclose(cfg_eps(model, x, 7, audio, scale=1.0), model(x, torch.full((3,), 7), audio))


def test_known_entries_are_reproduced():
    d = GaussianDiffusion(DiffusionConfig(num_timesteps=40))
    model = AudioDenoiser()
    g = torch.Generator().manual_seed(12)
    audio = torch.randn(1, 10, 4, generator=g)
    known = torch.randn(1, 10, 6, generator=g)
    mask = torch.zeros(1, 10, 6)
    mask[:, :3] = 1.0  # a known prefix
    mask[:, :, 4] = 1.0  # one known dimension everywhere
    for name in ("ddim", "ddpm"):
        x = sample(lambda x, t: model(x, t, audio), (1, 10, 6), make_sampler(d, name, 8),  # noqa: B023
                   generator=torch.Generator().manual_seed(0), known=known, known_mask=mask)
        assert torch.allclose(x[mask.bool()], known[mask.bool()], atol=1e-4)
        assert not torch.allclose(x[~mask.bool()], known[~mask.bool()], atol=0.1)


def test_clip_x0_bounds_the_sample():
    """A network that predicts ε = -10·x_t (x0 far out) is held to ±clip by clip_x0."""
    diff = GaussianDiffusion(DiffusionConfig(num_timesteps=50))
    sampler = DDIMSampler(diff)
    sampler.set_timesteps(10)
    wild = sample(lambda x, t: -10 * x, (2, 8, 4), sampler, generator=torch.Generator().manual_seed(0))
    held = sample(lambda x, t: -10 * x, (2, 8, 4), sampler, generator=torch.Generator().manual_seed(0),
                  clip_x0=1.5)
    assert wild.abs().max() > 1.5
    assert held.abs().max() <= 1.5 + 1e-5


def test_ddim_eta_per_dim_matches_scalar_steps_dim_by_dim(diffusion):
    """A vector η steps each dim as a scalar η of that value would; η = 0 dims stay deterministic."""
    model = AudioDenoiser()
    audio = torch.randn(2, 9, 4, generator=torch.Generator().manual_seed(4))
    fn = lambda x, t: cfg_eps(model, x, t, audio, scale=2.0)  # noqa: E731
    eta = torch.tensor([0.0, 0.0, 0.0, 0.7, 0.7, 0.7])
    mixed = make_sampler(diffusion, "ddim", steps=10, eta=eta)
    same = make_sampler(diffusion, "ddim", steps=10, eta=torch.full((6,), 0.7))
    scalar = make_sampler(diffusion, "ddim", steps=10, eta=0.7)
    x = torch.randn(2, 9, 6, generator=torch.Generator().manual_seed(1))
    t = int(mixed.timesteps[3])
    eps = fn(x, t)
    a = mixed.step(eps, t, x, generator=torch.Generator().manual_seed(2))
    b = scalar.step(eps, t, x, generator=torch.Generator().manual_seed(2))
    zero = make_sampler(diffusion, "ddim", steps=10, eta=0.0).step(eps, t, x)
    close = lambda u, v: torch.allclose(u, v, atol=1e-5)  # noqa: E731 (float32 vs float64 coefficients)
    assert close(a[..., 3:], b[..., 3:]) and close(a[..., :3], zero[..., :3])
    assert close(same.step(eps, t, x, generator=torch.Generator().manual_seed(2)), b)
    with pytest.raises(ValueError, match="eta"):
        DDIMSampler(diffusion, eta=torch.tensor([0.5, 1.5]))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_prediction_targets_convert_exactly(prediction):
    """The network's target for (x0, t, ε) maps back to the same x0 and ε, for every parameterisation."""
    d = GaussianDiffusion(DiffusionConfig(num_timesteps=400, prediction=prediction))
    g = torch.Generator().manual_seed(5)
    x0, eps = torch.randn(6, 9, 4, generator=g), torch.randn(6, 9, 4, generator=g)
    t = torch.tensor([0, 1, 50, 200, 398, 399])
    xt = d.q_sample(x0, t, eps)
    out = d.target(x0, t, eps)
    assert torch.allclose(d.to_x0(xt, t, out), x0, atol=2e-3)
    assert torch.allclose(d.to_eps(xt, t, out), eps, atol=2e-3)


def test_guidance_on_x0_outputs_equals_guidance_on_eps():
    """to_eps is affine with weights fixed by (x_t, t): guiding outputs then converting = converting then guiding."""
    d = GaussianDiffusion(DiffusionConfig(num_timesteps=400, prediction="x0"))
    g = torch.Generator().manual_seed(6)
    xt, a, b = (torch.randn(3, 5, 4, generator=g) for _ in range(3))
    t = torch.tensor([10, 200, 390])
    s = 2.5
    guided = d.to_eps(xt, t, s * a + (1 - s) * b)
    assert torch.allclose(guided, s * d.to_eps(xt, t, a) + (1 - s) * d.to_eps(xt, t, b), atol=1e-4)


def test_region_prediction_mixes_targets_per_dim():
    """x0 on lip/global dims and ε on the eye dims: each dim's target and conversions follow its kind."""
    from disenttalk.face.regions import RegionSplit

    split = RegionSplit(lip=(0, 1), eye=(2,), global_=(3,))
    d = GaussianDiffusion(DiffusionConfig(num_timesteps=400, prediction="x0",
                                          region_prediction={"eye": "eps"}), split)
    g = torch.Generator().manual_seed(8)
    x0, eps = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    t = torch.tensor([3, 150, 399])
    xt = d.q_sample(x0, t, eps)
    out = d.target(x0, t, eps)
    assert torch.equal(out[..., [0, 1, 3]], x0[..., [0, 1, 3]]) and torch.equal(out[..., 2], eps[..., 2])
    assert torch.allclose(d.to_x0(xt, t, out), x0, atol=2e-3)
    assert torch.allclose(d.to_eps(xt, t, out), eps, atol=2e-3)
    with pytest.raises(ValueError, match="region split"):
        GaussianDiffusion(DiffusionConfig(prediction="x0", region_prediction={"eye": "eps"}))
    with pytest.raises(Exception, match="unknown regions"):
        DiffusionConfig(region_prediction={"nose": "eps"})
