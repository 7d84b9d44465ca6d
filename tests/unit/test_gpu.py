"""The GPU paths: a train step of each phase and a generation on CUDA, results back on the host.

Marked ``gpu`` (excluded by default): on a machine with a GPU run ``make test-gpu``
(``pytest -m gpu``). Without one, ``resolve_device`` still says "auto" means the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disenttalk.audio import resolve_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_auto_device_is_cpu_without_a_gpu():
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.gpu
@needs_cuda
def test_train_steps_of_both_phases_on_cuda():
    from disenttalk.face.regions import RegionSplit
    from disenttalk.model.config import DenoiserConfig, SyncConfig
    from disenttalk.model.denoiser import Denoiser
    from disenttalk.model.diffusion import DiffusionConfig, GaussianDiffusion
    from disenttalk.model.sync import SyncExpert
    from disenttalk.model.train import (
        denoiser_eval_step,
        denoiser_train_step,
        sync_eval_step,
        sync_train_step,
    )

    cuda = torch.device("cuda")
    split = RegionSplit.contiguous(10, k_lip=3, k_eye=2)
    g = torch.Generator().manual_seed(0)
    batch = {"expression": torch.randn(4, 24, 10, generator=g).to(cuda),
             "audio": torch.randn(4, 24, 8, generator=g).to(cuda)}
    expert = SyncExpert(SyncConfig(embed_dim=8, hidden=16, windows_per_clip=2), audio_dim=8, lip_dim=3).to(cuda)
    opt = torch.optim.Adam(expert.parameters(), lr=1e-3)
    sync = sync_train_step(expert, batch, opt, g, split=split)
    assert np.isfinite(sync["loss"])
    assert 0.0 <= sync_eval_step(expert, batch, g, split=split)["auc"] <= 1.0
    denoiser = Denoiser(DenoiserConfig(dim=32, num_blocks=2, heads=2), split, 8).to(cuda)
    diffusion = GaussianDiffusion(DiffusionConfig(num_timesteps=50), split).to(cuda)
    opt = torch.optim.Adam(denoiser.parameters(), lr=1e-3)
    out = denoiser_train_step(denoiser, diffusion, batch, opt, split=split, expert=expert, generator=g)
    assert np.isfinite(out["loss"]) and out["sync_loss"] > 0
    assert np.isfinite(denoiser_eval_step(denoiser, diffusion, batch, split=split, expert=expert,
                                          generator=g)["loss"])


def _real_bundle():
    """A bundle with a real (randomly initialised) denoiser and the mel frontend."""
    from disenttalk.bundle import Bundle
    from disenttalk.face.regions import RegionSplit
    from disenttalk.model.config import DenoiserConfig, ModelConfig
    from disenttalk.model.denoiser import Denoiser

    split = RegionSplit.contiguous(10, k_lip=3, k_eye=2)
    cfg = ModelConfig(denoiser=DenoiserConfig(dim=16, num_blocks=2, heads=2), n_expression=10, k_lip=3, k_eye=2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = Denoiser(cfg.denoiser, split, 2 * cfg.audio.n_mels).state_dict()
    norm = {"mean": np.zeros(10, np.float32), "std": np.ones(10, np.float32)}
    return Bundle(path=None, config=cfg, split=split, norm=norm, expert_state={}, denoiser_state=state, meta={})


def test_generation_runs_where_auto_points():
    from disenttalk.generate.generator import Generator

    gen = Generator(_real_bundle(), device="auto")
    assert gen.device == resolve_device("auto") and gen.frontend.device == gen.device
    audio = (0.1 * np.sin(np.arange(16000) / 7)).astype(np.float32)
    motion = gen.motion(audio, 16000, steps=3, seed=0)
    assert isinstance(motion.expression, np.ndarray) and motion.expression.shape == (25, 10)


@pytest.mark.gpu
@needs_cuda
def test_generation_on_cuda_matches_the_cpu():
    from disenttalk.generate.generator import Generator

    audio = (0.1 * np.sin(np.arange(32000) / 7)).astype(np.float32)
    on_cpu = Generator(_real_bundle(), device="cpu").motion(audio, 16000, steps=4, seed=1)
    on_gpu = Generator(_real_bundle(), device="cuda").motion(audio, 16000, steps=4, seed=1)
    assert isinstance(on_gpu.expression, np.ndarray)
    np.testing.assert_allclose(on_gpu.expression, on_cpu.expression, atol=1e-3)
