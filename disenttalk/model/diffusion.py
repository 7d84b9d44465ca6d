"""The diffusion process over expression sequences (paper Eq. 3, 8, 9) and its samplers.

The network is separate from the process: :class:`GaussianDiffusion` holds the noise schedule
and the closed-form relations between x0, x_t and ε; the samplers walk a timestep sequence
through a diffusers-style ``set_timesteps`` / ``step`` interface, so DDPM (all T steps, the
paper) and DDIM (k steps, real time) swap freely and can be tested without a network.
Timesteps are 0-based: t ∈ {0, …, T-1}, and "t = -1" stands for clean data (ᾱ = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

# the settings live with the other model configs (importable without torch); re-exported here
from disenttalk.model.config import (  # noqa: F401
    DEFAULT_SPACING,
    DEFAULT_STEPS,
    SPACINGS,
    DiffusionConfig,
    Prediction,
    Spacing,
)

# one generator for the whole batch, or one per row (each row's noise as drawn for it alone)
Generators = torch.Generator | Sequence[torch.Generator] | None


def make_betas(cfg: DiffusionConfig) -> np.ndarray:
    """β_1..β_T in float64."""
    T = cfg.num_timesteps
    if T < 1:
        raise ValueError("num_timesteps must be >= 1")
    if cfg.schedule == "linear":
        scale = 1000.0 / T
        start = cfg.beta_start if cfg.beta_start is not None else scale * 1e-4
        end = cfg.beta_end if cfg.beta_end is not None else scale * 0.02
        betas = np.linspace(start, end, T, dtype=np.float64)
    else:  # cosine: ᾱ(t) = cos²((t/T + s)/(1 + s) · π/2), β_t = 1 - ᾱ_t/ᾱ_{t-1}, clipped
        s = 0.008
        steps = np.arange(T + 1, dtype=np.float64) / T
        abar = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = np.clip(1.0 - abar[1:] / abar[:-1], 0.0, 0.999)
    if not np.all((betas > 0) & (betas < 1)):
        raise ValueError("betas must lie in (0, 1)")
    return betas


def _bcast(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """values[t] shaped [B, 1, …, 1] to broadcast against x [B, …]."""
    out = values.to(x.device)[t.to(x.device).long()].to(x.dtype)
    return out.reshape(out.shape + (1,) * (x.dim() - out.dim()))


class GaussianDiffusion(nn.Module):
    """Forward process q(x_t | x0) and the x0 ↔ ε relations (schedule in float64, buffers float32)."""

    def __init__(self, cfg: DiffusionConfig | None = None, split: Any = None) -> None:
        """``split`` (a RegionSplit) places ``cfg.region_prediction``'s exceptions on their dims."""
        super().__init__()
        self.cfg = cfg or DiffusionConfig()
        # kind → bool mask [N] of the dims predicted that way; one kind = no masks needed
        self.kinds: dict[str, torch.Tensor] | None = None
        if self.cfg.region_prediction:
            if split is None:
                raise ValueError("region_prediction needs the region split of the parameters")
            kinds = np.full(split.num_dims, self.cfg.prediction, dtype=object)
            for region, kind in self.cfg.region_prediction.items():
                kinds[list(split.indices(region))] = kind
            self.kinds = {k: torch.from_numpy(kinds == k) for k in set(kinds.tolist())}
        betas = make_betas(self.cfg)
        abar = np.cumprod(1.0 - betas)
        self.num_timesteps = len(betas)
        # float64 copy for the samplers' scalar arithmetic (not a buffer: never moved or cast)
        self.alphas_cumprod_f64 = abar
        for name, value in {
            "betas": betas,
            "alphas_cumprod": abar,
            "sqrt_alphas_cumprod": np.sqrt(abar),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
        }.items():
            self.register_buffer(name, torch.from_numpy(value).float(), persistent=False)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Eq. 3 in cumulative form: x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε, x0/noise [B,…], t [B] long."""
        return (
            _bcast(self.sqrt_alphas_cumprod, t, x0) * x0
            + _bcast(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t."""
        return (
            x_t - _bcast(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps
        ) / _bcast(self.sqrt_alphas_cumprod, t, x_t)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """ε = (x_t - √ᾱ_t x0) / √(1-ᾱ_t)."""
        return (
            x_t - _bcast(self.sqrt_alphas_cumprod, t, x_t) * x0
        ) / _bcast(self.sqrt_one_minus_alphas_cumprod, t, x_t)

    def _per_kind(self, fn: Callable[[str], torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """fn(kind) on every dim predicted as that kind (one call when all dims share one)."""
        if self.kinds is None:
            return fn(self.cfg.prediction)
        out = torch.zeros_like(like)
        for kind, dims in self.kinds.items():
            out = torch.where(dims.to(like.device), fn(kind), out)
        return out

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network is trained to output for (x0, t, ε): ε, x0 or v (per dim)."""
        a = _bcast(self.sqrt_alphas_cumprod, t, x0)
        b = _bcast(self.sqrt_one_minus_alphas_cumprod, t, x0)
        table = {"eps": lambda: noise, "x0": lambda: x0, "v": lambda: a * noise - b * x0}
        return self._per_kind(lambda kind: table[kind](), x0)

    def to_x0(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The clean sequence x0̂ implied by a network output."""
        a = _bcast(self.sqrt_alphas_cumprod, t, x_t)
        b = _bcast(self.sqrt_one_minus_alphas_cumprod, t, x_t)
        table = {"eps": lambda: self.predict_x0(x_t, t, out), "x0": lambda: out,
                 "v": lambda: a * x_t - b * out}
        return self._per_kind(lambda kind: table[kind](), x_t)

    def to_eps(self, x_t: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The noise ε̂ implied by a network output (what the samplers step with).

        Affine in ``out`` with coefficients fixed by (x_t, t), so classifier-free guidance
        combines outputs of any kind exactly as it combines ε.
        """
        a = _bcast(self.sqrt_alphas_cumprod, t, x_t)
        b = _bcast(self.sqrt_one_minus_alphas_cumprod, t, x_t)
        table = {"eps": lambda: out, "x0": lambda: self.predict_eps(x_t, t, out),
                 "v": lambda: b * x_t + a * out}
        return self._per_kind(lambda kind: table[kind](), x_t)

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> torch.Tensor:
        """t ~ U{0, …, T-1} for the training loss (Eq. 8), shape [B] long."""
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator)
        return t.to(device) if device is not None else t


class _Sampler:
    """Shared timestep bookkeeping: a descending subsequence of 0..T-1, each step to the next."""

    def __init__(self, diffusion: GaussianDiffusion) -> None:
        self.diffusion = diffusion
        self.set_timesteps(diffusion.num_timesteps)

    def set_timesteps(self, k: int | None = None, spacing: Spacing = "uniform") -> None:
        """Use k timesteps starting at T-1 ("trailing", so sampling starts at pure noise):
        ``uniform`` = evenly spaced; ``quadratic`` = t_i ≈ T·(1 − i/k)² (DDIM's quadratic
        schedule: dense near the data, sparse at high noise)."""
        T = self.diffusion.num_timesteps
        k = T if k is None else int(k)
        if not 1 <= k <= T:
            raise ValueError(f"number of steps must be in 1..{T}, got {k}")
        if spacing == "uniform":
            ts = np.round(np.arange(T, 0, -T / k)).astype(np.int64) - 1
        elif spacing == "quadratic":
            ts = np.round(T * (1.0 - np.arange(k) / k) ** 2).astype(np.int64) - 1
            for i in range(k - 2, -1, -1):  # strictly descending down to ≥ 0: k distinct steps
                ts[i + 1] = max(ts[i + 1], k - 2 - i)
                ts[i] = max(ts[i], ts[i + 1] + 1)
        else:
            raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
        self.timesteps = torch.from_numpy(ts)  # descending LongTensor
        self._prev = {int(a): int(b) for a, b in zip(ts, list(ts[1:]) + [-1], strict=True)}

    def _alphas(self, t: int | torch.Tensor) -> tuple[int, float, float]:
        """(t, ᾱ_t, ᾱ_prev) as float64 scalars; ᾱ at t = -1 is 1."""
        t = int(t)
        if t not in self._prev:
            raise ValueError(f"timestep {t} is not in the current schedule; call set_timesteps")
        prev = self._prev[t]
        abar = self.diffusion.alphas_cumprod_f64
        return t, float(abar[t]), float(abar[prev]) if prev >= 0 else 1.0

    @staticmethod
    def _noise(x: torch.Tensor, generator: Generators) -> torch.Tensor:
        """Standard normal noise shaped like ``x``; with a sequence of generators, row i from
        generator i, drawn as it would be for that row alone (batched sampling draws each
        stream's own numbers)."""
        if isinstance(generator, Sequence):
            if len(generator) != x.shape[0]:
                raise ValueError(f"{len(generator)} generators for {x.shape[0]} rows")
            return torch.cat([_Sampler._noise(x[i:i + 1], g) for i, g in enumerate(generator)])
        # drawn on the generator's device, so a CPU generator gives the same numbers on any device
        device = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


class DDPMSampler(_Sampler):
    """Ancestral sampling from the posterior q(x_prev | x_t, x0̂) with variance β̃ (Ho et al.)."""

    def step(self, eps: torch.Tensor, t: int | torch.Tensor, x_t: torch.Tensor,
             generator: Generators = None) -> torch.Tensor:
        """One reverse step x_t → x_prev given the predicted ε; fewer than T steps = respaced DDPM."""
        t, a_t, a_prev = self._alphas(t)
        beta = 1.0 - a_t / a_prev  # effective β between the two kept timesteps
        x0 = (x_t - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
        # posterior mean μ̃ = c0·x0 + ct·x_t and variance β̃ = β(1-ᾱ_prev)/(1-ᾱ_t)
        c0 = math.sqrt(a_prev) * beta / (1.0 - a_t)
        ct = math.sqrt(1.0 - beta) * (1.0 - a_prev) / (1.0 - a_t)
        mean = c0 * x0 + ct * x_t
        var = beta * (1.0 - a_prev) / (1.0 - a_t)
        if var <= 0.0:
            return mean
        return mean + math.sqrt(var) * self._noise(x_t, generator)


class DDIMSampler(_Sampler):
    """DDIM (Song et al.): eta=0 deterministic, eta=1 the DDPM posterior on the same timesteps.

    ``eta`` is one number or one per parameter dim ([N], broadcast over the last axis): each
    dim's update is elementwise, so regions can be sampled with their own stochasticity.
    """

    def __init__(self, diffusion: GaussianDiffusion, eta: float | Sequence[float] | torch.Tensor = 0.0
                 ) -> None:
        super().__init__(diffusion)
        values = torch.as_tensor(eta, dtype=torch.float64)
        if values.dim() > 1 or not bool(((values >= 0) & (values <= 1)).all()):
            raise ValueError(f"DDIM eta must be a number or a vector in [0, 1], got {eta!r}")
        self.eta: float | torch.Tensor = float(values) if values.dim() == 0 else values

    def step(self, eps: torch.Tensor, t: int | torch.Tensor, x_t: torch.Tensor,
             generator: Generators = None) -> torch.Tensor:
        """x_prev = √ᾱ_prev x0̂ + √(1-ᾱ_prev-σ²) ε + σ z."""
        t, a_t, a_prev = self._alphas(t)
        x0 = (x_t - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
        scale = math.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
        if isinstance(self.eta, float):
            sigma = self.eta * scale
            out = math.sqrt(a_prev) * x0 + math.sqrt(max(1.0 - a_prev - sigma**2, 0.0)) * eps
            if sigma <= 0.0:
                return out
            return out + sigma * self._noise(x_t, generator)
        sigma = (self.eta * scale).to(x_t)  # [N]
        out = math.sqrt(a_prev) * x0 + (1.0 - a_prev - sigma**2).clamp(min=0.0).sqrt() * eps
        return out + sigma * self._noise(x_t, generator)


Sampler = DDPMSampler | DDIMSampler


def make_sampler(diffusion: GaussianDiffusion, name: str, steps: int | None = None,
                 eta: float | Sequence[float] | torch.Tensor = 0.0,
                 spacing: Spacing | None = None) -> Sampler:
    """``"ddpm"`` (all T steps unless ``steps``; uniform unless ``spacing``) or ``"ddim"``
    (``steps``, default :data:`DEFAULT_STEPS`; ``spacing`` default :data:`DEFAULT_SPACING`)."""
    if name == "ddpm":
        sampler: Sampler = DDPMSampler(diffusion)
        sampler.set_timesteps(steps, spacing or "uniform")
    elif name == "ddim":
        sampler = DDIMSampler(diffusion, eta=eta)
        sampler.set_timesteps(steps or DEFAULT_STEPS, spacing or DEFAULT_SPACING)
    else:
        raise ValueError(f"unknown sampler {name!r}; expected 'ddpm' or 'ddim'")
    return sampler


def _timesteps(t: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(t, device=device).long()
    return t.expand(batch) if t.dim() == 0 else t  # a scalar timestep applies to the whole batch


def _scales(scale: float | Sequence[float], batch: int) -> tuple[list[float] | None, bool]:
    """(per-row scales or None, whether every row is s = 1: the conditional ε alone)."""
    rows = [float(v) for v in scale] if isinstance(scale, Sequence) else None
    if rows is not None and len(rows) != batch:
        raise ValueError(f"{len(rows)} guidance scales for {batch} rows")
    return rows, (scale == 1.0 if rows is None else all(v == 1.0 for v in rows))


def _twice(v: torch.Tensor | None) -> torch.Tensor | None:
    return None if v is None else torch.cat([v, v], dim=0)


def _drop_second_half(batch: int, device: torch.device) -> torch.Tensor:
    """drop_audio of a doubled batch: its second half gets the learned null embedding (∅)."""
    return torch.cat([torch.zeros(batch, dtype=torch.bool),
                      torch.ones(batch, dtype=torch.bool)]).to(device)


def _guide(eps: torch.Tensor, scale: float | Sequence[float], rows: list[float] | None
           ) -> torch.Tensor:
    """Eq. 9 on the doubled batch's output [2B,…] (conditional rows first) → ε* [B,…]."""
    B = eps.shape[0] // 2
    eps_c, eps_u = eps[:B], eps[B:]
    if rows is None:
        return scale * eps_c + (1.0 - scale) * eps_u
    # per row as the scalar form computes it: s and 1 - s (in double) rounded to the tensor's dtype
    w_c, w_u = (torch.tensor(w, dtype=eps.dtype, device=eps.device).view(B, *[1] * (eps.dim() - 1))
                for w in (rows, [1.0 - v for v in rows]))
    mixed = w_c * eps_c + w_u * eps_u
    ones = torch.tensor([v == 1.0 for v in rows], device=eps.device).view_as(w_c)
    return torch.where(ones, eps_c, mixed)  # s = 1: the conditional ε, as alone


def cfg_eps(model: nn.Module, x_t: torch.Tensor, t: torch.Tensor | int, audio: torch.Tensor | None,
            cond: torch.Tensor | None = None, cond_mask: torch.Tensor | None = None,
            scale: float | Sequence[float] = 1.0) -> torch.Tensor:
    """Eq. 9: ε* = s·ε(x_t, t, A) + (1-s)·ε(x_t, t, ∅), both halves in one batched forward.

    ``scale``: one s for all rows, or one per row (rows of different streams sampled together);
    each row's ε* is then the same numbers as that row sampled alone with its own s.
    """
    B = x_t.shape[0]
    t = _timesteps(t, B, x_t.device)
    rows, conditional = _scales(scale, B)
    if audio is None or conditional:
        return model(x_t, t, audio, cond=cond, cond_mask=cond_mask)  # s = 1: the conditional ε
    eps = model(_twice(x_t), _twice(t), _twice(audio), cond=_twice(cond),
                cond_mask=_twice(cond_mask), drop_audio=_drop_second_half(B, x_t.device))
    return _guide(eps, scale, rows)


def cfg_bind(model: Any, audio: torch.Tensor | None, cond: torch.Tensor | None = None,
             cond_mask: torch.Tensor | None = None, scale: float | Sequence[float] = 1.0
             ) -> Callable[[torch.Tensor, torch.Tensor | int], torch.Tensor]:
    """:func:`cfg_eps` for one window, bound once: ``eps_fn(x_t, t) → ε*``.

    ``model`` has ``bind`` (a :class:`~disenttalk.model.denoiser.Denoiser`, or
    :func:`disenttalk.model.fast.accelerate`'s result); the audio, known values and guidance
    rows are prepared once and every call runs the bound step (ε* as cfg_eps gives with
    ``forward``, to the bound step's tolerance).
    """
    ref = cond if cond is not None else audio
    if ref is None:
        raise ValueError("cfg_bind needs audio or cond to know the window's shape")
    B, device = ref.shape[0], ref.device
    rows, conditional = _scales(scale, B)
    if audio is None or conditional:
        bound = model.bind(audio, cond, cond_mask)
        return lambda x_t, t: bound(x_t, _timesteps(t, B, device))
    bound = model.bind(_twice(audio), _twice(cond), _twice(cond_mask),
                       _drop_second_half(B, device))

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        t = _timesteps(t, B, device)
        return _guide(bound(_twice(x_t), _twice(t)), scale, rows)

    return eps_fn


ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def sample(model_fn: ModelFn, shape: tuple[int, ...], sampler: Sampler, *,
           generator: Generators = None, device: torch.device | str = "cpu",
           x_T: torch.Tensor | None = None, known: torch.Tensor | None = None,
           known_mask: torch.Tensor | None = None, clip_x0: float | None = None) -> torch.Tensor:
    """Run the reverse process: ``model_fn(x_t, t [B]) -> ε``; returns x0 [shape].

    ``known``/``known_mask`` (1 = known) pin entries of x0: at every step the predicted x0 takes
    the known values there and ε is re-derived from it, so the sampler's trajectory is consistent
    with them and the final sample reproduces them exactly (the last step returns x0̂ itself).
    ``clip_x0`` clamps the predicted x0 to ±clip_x0 at every step (DDPM's "clip denoised"; for
    standardised parameters a few σ keeps an imperfect network from drifting off the face).
    """
    diffusion = sampler.diffusion
    x = sampler._noise(torch.empty(shape, device=device), generator) if x_T is None else x_T.to(device)
    pin = known is not None and known_mask is not None
    for t in sampler.timesteps:
        tb = torch.full((shape[0],), int(t), dtype=torch.long, device=device)
        eps = model_fn(x, tb)
        if pin or clip_x0 is not None:
            x0 = diffusion.predict_x0(x, tb, eps)
            if clip_x0 is not None:
                x0 = x0.clamp(-clip_x0, clip_x0)
            if pin:
                x0 = torch.where(known_mask.bool(), known, x0)
            eps = diffusion.predict_eps(x, tb, x0)
        x = sampler.step(eps, t, x, generator=generator)
    return x
