"""Golden numbers: fixed seeds and tiny fixed weights through the samplers and the renderer.

Each test runs a short, fully seeded computation and compares a few numbers of its output with
values recorded from the code as it is (the ``full_loop`` tests of diffusers). They pin down
behaviour that the property tests leave free: a change to the step spacing, the noise schedule,
the guidance formula, the posterior variance, the denoiser's layers or a render setting changes
the numbers. A deliberate change re-records them: run the test, read the new numbers from the
failure message, paste them below and say in the commit why they moved.

Tolerances:

- samplers and the denoiser (float32 on the CPU, one thread): the sum of the output, the sum of
  its absolute values and their mean each within ``rtol=1e-4`` and ``atol=1e-5`` of the recorded
  number (room for summation order across CPUs and BLAS builds, far below any change of method);
- renderer: the mean of the uint8 frames within ±0.0005 grey levels of the recorded mean (the sum
  within that × the number of values), and the frames' total change from the portrait (sum of
  |frame − portrait|) within ±0.1 %. Only a small part of a frame moves, so a render setting
  shifts the whole frames' mean by a few thousandths of a grey level (``feather`` 1 → 1.5:
  −0.003; ``lid_shade`` 0.15 → 0.2: −0.0008) and the total change by tenths of a per cent to a
  few per cent (``still_below`` 0.002 → 0.003: −2.8 %; ``lip_blend`` 0.12 → 0.15: +0.26 %);
  a different CPU moves a handful of values by one level. The portrait's landmarks come from
  MediaPipe's FaceMesh, pinned in pyproject.toml.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from disenttalk.face.regions import RegionSplit
from disenttalk.model.config import DenoiserConfig, DiffusionConfig
from disenttalk.model.denoiser import Denoiser
from disenttalk.model.diffusion import GaussianDiffusion, cfg_eps, make_sampler, sample

RTOL, ATOL = 1e-4, 1e-5  # samplers and the denoiser
FRAME_MEAN_TOL = 5e-4  # renderer: grey levels on the mean of the uint8 frames
CHANGE_RTOL = 1e-3  # renderer: share of the frames' total change from the portrait
N, FRAMES, FEATURES, PREFIX = 10, 12, 4, 3
SPLIT = RegionSplit.contiguous(N, k_lip=3, k_eye=2)
CLIP_X0 = 4.0  # the generator's clip of x0̂ (standardised parameters)
# the shipped model's process (configs/model.yaml): T = 400, linear, the network predicts x0
DIFFUSION = DiffusionConfig(num_timesteps=400, schedule="linear", prediction="x0")

# (sum, sum of |x|, mean of |x|) of each output, recorded from the code as it is
GOLDEN = {
    "denoiser": (19.9240388, 99.4376288, 0.828646907),
    "ddim_guided": (1.27258031, 111.865811, 0.932215094),
    "ddim_guided_prefix": (13.3784226, 122.035208, 1.01696007),
    "ddpm": (14.8700725, 130.676477, 1.08897064),
    "ddpm_respaced": (14.4866884, 130.501294, 1.08751078),
    "ddim_eta1_uniform": (7.94028974, 106.092504, 0.8841042),
    "ddim_eta_per_dim": (-0.552201122, 113.281225, 0.944010211),
}
RENDER_GOLDEN = (90090368, 114.555827, 241866)  # (sum, mean, sum of |frame − portrait|) of the uint8 frames


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_denoiser() -> Denoiser:
    """A two-block denoiser with seeded weights; its output layer (zero at initialisation, so
    that training starts at ε̂ = 0) is drawn too, so the network shapes every sample."""
    torch.manual_seed(0)
    model = Denoiser(DenoiserConfig(dim=16, num_blocks=2, heads=2, region_dim=8), SPLIT, FEATURES)
    nn.init.normal_(model.out.weight, std=0.3)
    nn.init.normal_(model.out.bias, std=0.1)
    return model.eval()


def inputs() -> dict[str, torch.Tensor]:
    """Audio features [1,T,F], a known sequence [1,T,N] and its mask (the first PREFIX frames)."""
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(1, FRAMES, FEATURES, generator=g)
    known = torch.randn(1, FRAMES, N, generator=g)
    mask = torch.zeros(1, FRAMES, N)
    mask[:, :PREFIX] = 1.0
    return {"audio": audio, "known": known, "mask": mask}


def run_sampler(name: str, *, steps: int | None = None, eta=0.0, spacing=None, scale: float = 2.0,
                prefix: bool = False) -> torch.Tensor:
    """One window [1,T,N] sampled from noise seeded at 2 as generation samples it: guidance
    ``scale`` (Eq. 9) on the network's x0, turned into ε for the sampler, x0̂ clipped at
    ±:data:`CLIP_X0`."""
    model, x = tiny_denoiser(), inputs()
    diffusion = GaussianDiffusion(DIFFUSION, SPLIT)
    sampler = make_sampler(diffusion, name, steps=steps, eta=eta, spacing=spacing)
    cond, mask = (x["known"], x["mask"]) if prefix else (None, None)

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = cfg_eps(model, x_t, t, x["audio"], cond=cond, cond_mask=mask, scale=scale)
        return diffusion.to_eps(x_t, t, out)

    return sample(model_fn, (1, FRAMES, N), sampler, generator=torch.Generator().manual_seed(2),
                  known=cond, known_mask=mask, clip_x0=CLIP_X0)


def numbers(x: torch.Tensor) -> tuple[float, float, float]:
    x = x.double()
    return float(x.sum()), float(x.abs().sum()), float(x.abs().mean())


def assert_golden(key: str, x: torch.Tensor) -> None:
    got = numbers(x)
    assert np.allclose(got, GOLDEN[key], rtol=RTOL, atol=ATOL), (
        f"{key}: (sum, sum |x|, mean |x|) = {got!r}, recorded {GOLDEN[key]!r}")


def test_denoiser_forward():
    """One guided forward pass at t = 200 with a known prefix: the samplers' tests below build
    on this network, so when they fail and this passes, the sampling moved."""
    model, x = tiny_denoiser(), inputs()
    x_t = torch.randn(1, FRAMES, N, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        eps = cfg_eps(model, x_t, 200, x["audio"], cond=x["known"], cond_mask=x["mask"], scale=2.0)
    assert_golden("denoiser", eps)


def test_ddim_with_guidance():
    """DDIM as generation runs it: the default steps and spacing, η = 0, guidance 2."""
    assert_golden("ddim_guided", run_sampler("ddim"))


def test_ddim_with_guidance_and_a_known_prefix():
    """... with a known prefix pinned (a stream window's overlap)."""
    out = run_sampler("ddim", prefix=True)
    torch.testing.assert_close(out[:, :PREFIX], inputs()["known"][:, :PREFIX])
    assert_golden("ddim_guided_prefix", out)


@pytest.mark.parametrize("key, name, kw", [
    ("ddpm", "ddpm", {}),  # all T = 400 steps (the paper)
    ("ddpm_respaced", "ddpm", {"steps": 25, "spacing": "quadratic"}),
    ("ddim_eta1_uniform", "ddim", {"steps": 7, "eta": 1.0, "spacing": "uniform"}),  # T/k not whole
    ("ddim_eta_per_dim", "ddim", {"steps": 6, "eta": [0.0] * 3 + [1.0] * 2 + [0.5] * 5}),
])
def test_samplers(key, name, kw):
    """DDPM (full and respaced) and stochastic DDIM (one η, and η per parameter dim)."""
    assert_golden(key, run_sampler(name, scale=1.5, **kw))


def render_frames(portrait: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Four frames of fixed expression parameters: a morphable model fit to the portrait's
    landmarks with the mouth opened and the eyes closed by fixed amounts (and seeded jitter),
    the portrait's own coefficients moved along its first three axes, rendered on the portrait."""
    from disenttalk.face.editors import close_eyes, open_mouth
    from disenttalk.face.morphable import MorphableModel
    from disenttalk.render import WarpRenderer

    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 1.0, 16)
    clips = []
    for k in range(3):
        mouth = open_mouth(landmarks, 0.12 * (1 + np.sin(2 * np.pi * (t + k / 3))))
        clip = np.stack([close_eyes(f, a) for f, a in zip(mouth, np.abs(np.sin(3 * t + k)), strict=True)])
        clips.append(clip + rng.normal(0, 0.3, clip.shape).astype(np.float32))
    model = MorphableModel.fit(clips, n_expression=6)
    own, pose, identity = model.encode(landmarks[None])
    steps = np.array([[0, 0, 0], [2, 0, 0], [-1, 1.5, 0], [1, -1, 2]], np.float64)
    expression = own + np.pad(steps, ((0, 0), (0, 3))) * model.expression_std
    targets = model.decode(expression, np.repeat(pose, 4, 0), identity, model.detail(landmarks))
    return WarpRenderer(portrait, landmarks).render(targets.astype(np.float32))


def test_renderer(astronaut_256):
    portrait, landmarks = astronaut_256
    frames = render_frames(portrait, landmarks)
    assert frames.shape == (4, 256, 256, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[0], portrait)  # the portrait's own expression: nothing moves
    got = (int(frames.sum(dtype=np.int64)), float(frames.mean(dtype=np.float64)),
           int(np.abs(frames.astype(np.int64) - portrait).sum()))
    total, mean, change = RENDER_GOLDEN
    message = f"(sum, mean, change) of the frames = {got!r}, recorded {RENDER_GOLDEN!r}"
    assert abs(got[0] - total) <= FRAME_MEAN_TOL * frames.size, message
    assert abs(got[1] - mean) <= FRAME_MEAN_TOL, message
    assert abs(got[2] - change) <= CHANGE_RTOL * change, message
