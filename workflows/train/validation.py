"""The lip error of sampled motion on fixed validation windows, for every denoiser checkpoint.

The denoiser's held-out loss at random timesteps says little about how well sampled lips follow
the audio (with x0-prediction it rises while the lip error still falls), so rank 0 also samples
motion for the same validation windows at every checkpoint, as generation does (DDIM, quadratic
spacing, classifier-free guidance, the clamp on x0), and measures the mouth-landmark distance
of its decoded expression to the window's own: ``val_lip_error`` in inter-ocular units, on the
morphable model's mean face. It is what a sweep's early stopping compares between trials, and a
learning curve in MLflow. The truth here is the clip's encoded expression, so a perfect model
scores 0 (evaluate's LMD also counts what the encoding cannot represent).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from disenttalk.constants import DEFAULT_STEPS
from disenttalk.face import topology
from disenttalk.metrics.landmarks import inter_ocular

VAL_SEED = 20_240_601  # the same windows and noise at every checkpoint
STEPS = DEFAULT_STEPS  # DDIM steps, as generation's default


class LipError:
    """Mouth-landmark error of sampled motion on one fixed batch of validation windows."""

    def __init__(self, windows: Any, morphable: Any, norm: dict[str, np.ndarray], batch_size: int,
                 device: torch.device) -> None:
        rng = np.random.default_rng(VAL_SEED)
        batch = windows.sample(batch_size, rng)
        self.device = device
        self.x0 = torch.as_tensor(batch["expression"], device=device)  # normalised [B,W,N]
        self.audio = torch.as_tensor(batch["audio"], device=device)
        n = morphable.n_expression
        mouth = list(dict.fromkeys(topology.LIPS))
        basis = morphable.expression_basis.reshape(n, -1, 3)[:, mouth, :2]  # [N,P,2] per unit
        rest = morphable.decode(np.zeros((1, n)), np.zeros((1, 6)), np.zeros(morphable.n_identity))
        scale = float(inter_ocular(rest)[0])
        # a normalised step in dim i moves the mouth by std_i · basis_i: one map [N, P·2]
        self.to_mouth = torch.as_tensor(
            (np.asarray(norm["std"], np.float64)[:, None, None] * basis / scale).reshape(n, -1),
            dtype=torch.float32, device=device)

    @torch.no_grad()
    def __call__(self, denoiser: torch.nn.Module, diffusion: Any) -> float:
        """Mean mouth-landmark distance (inter-ocular units) of sampled vs true windows."""
        from disenttalk.generate.generator import CLIP_X0, DEFAULT_ETA, DEFAULT_GUIDANCE
        from disenttalk.model.diffusion import cfg_eps, make_sampler, sample

        was_training = denoiser.training
        denoiser.eval()
        sampler = make_sampler(diffusion, "ddim", STEPS, eta=DEFAULT_ETA, spacing="quadratic")
        gen = torch.Generator(device="cpu").manual_seed(VAL_SEED)

        def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return diffusion.to_eps(x, t, cfg_eps(denoiser, x, t, self.audio, scale=DEFAULT_GUIDANCE))

        x = sample(eps_fn, tuple(self.x0.shape), sampler, generator=gen, device=self.device,
                   clip_x0=CLIP_X0)
        denoiser.train(was_training)
        b, w, _ = x.shape
        moved = ((x - self.x0) @ self.to_mouth).view(b, w, -1, 2)  # [B,W,P,2]
        return float(moved.norm(dim=-1).mean())
