"""Model configs: audio frontend, denoiser, sync expert, training, and the composed ``ModelConfig``.

All are :class:`~disenttalk.config.StrictConfig` (frozen, unknown keys and wrong types are
errors, exact JSON round trip). Defaults follow the paper (Section III.B, IV.A) where it says
something; elsewhere they are sized so DDIM-25 with guidance runs faster than real time on CPU.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from disenttalk.config import StrictConfig
from disenttalk.constants import SAMPLE_RATE

Prediction = Literal["eps", "x0", "v"]
Spacing = Literal["uniform", "quadratic"]
# Generation's sampler: DDIM with 10 quadratically spaced steps. On the demo model (24 val + test
# clips, decoded landmarks, 2 seeds) that closes as much of the lip gap as 25 uniform steps
# (0.469 / 0.451 vs 0.466 / 0.444) at 2.5x less compute; 10 uniform steps lose 6-9 % of it
# (0.437 / 0.397). Few steps spent at high noise, where an x0-predicting network sees only the
# mean, and more near the data, where lip shapes are decided.
DEFAULT_STEPS = 10
DEFAULT_SPACING: Spacing = "quadratic"
SPACINGS = ("uniform", "quadratic")


class DiffusionConfig(StrictConfig):
    """Noise schedule: T steps, linear (DDPM) or cosine (Nichol & Dhariwal) β_t; what the network predicts."""

    num_timesteps: int = 400
    schedule: Literal["linear", "cosine"] = "linear"
    # The network's output: ε (the paper, Eq. 8), the clean sequence x0 (as motion diffusion
    # models such as MDM and DiffPoseTalk do: the loss weighs every noise level by how wrong the
    # motion itself is, which on small corpora learns the audio → lip mapping far faster), or
    # v = √ᾱ ε − √(1−ᾱ) x0. Samplers always receive ε (converted with :meth:`GaussianDiffusion.to_eps`).
    prediction: Prediction = "eps"
    # Per-region exceptions, e.g. {"eye": "eps"}: blinks are not driven by the audio, and an x0
    # target averages such unpredictable events away (on the demo corpus x0 everywhere gave a
    # third of the truth's blink rate), while ε keeps them as samples of the noise.
    region_prediction: dict[str, Prediction] = {}

    @field_validator("region_prediction")
    @classmethod
    def _regions(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - {"lip", "eye", "global"})
        if unknown:
            raise ValueError(f"region_prediction: unknown regions {unknown}; use lip, eye, global")
        return value
    # None = DDPM's 1e-4 … 0.02 at T=1000, rescaled by 1000/T so that ᾱ_T ≈ 0 for any T
    # (at T=400 the unscaled range would leave √ᾱ_T ≈ 0.13 of the signal in "pure noise").
    beta_start: float | None = None
    beta_end: float | None = None



class AudioConfig(StrictConfig):
    """Audio frontend: log-mel (no weights, the offline default) or HuBERT hidden states."""

    frontend: Literal["mel", "hubert"] = "mel"
    sample_rate: int = Field(SAMPLE_RATE, gt=0)  # the paper's 16 kHz mono
    fps: int = Field(25, gt=0)  # video frame rate; features are stacked to this rate
    # log-mel: 50 Hz frames (hop 20 ms, window 25 ms, 512-point FFT)
    n_mels: int = Field(80, gt=0)
    n_fft: int = Field(512, gt=0)
    win_length: int = Field(400, gt=0)
    hop_length: int = Field(320, gt=0)
    # "fixed": a constant affine map of log10-mel (chunk-independent, so streaming matches
    # offline); "utterance": per-utterance mean/variance per mel bin.
    normalize: Literal["fixed", "utterance"] = "fixed"
    # HuBERT: hub id or local directory; downloads only when the user allows them.
    hubert_model: str | None = "facebook/hubert-base-ls960"
    hubert_layer: int = 9  # index into hidden_states (0 = CNN features after projection)
    allow_download: bool = False

    @model_validator(mode="after")
    def _check(self) -> AudioConfig:
        if self.win_length > self.n_fft:
            raise ValueError("win_length must not exceed n_fft")
        if self.frontend == "hubert" and not self.hubert_model:
            raise ValueError("frontend 'hubert' needs hubert_model (hub id or local path)")
        return self


class DenoiserConfig(StrictConfig):
    """Spatio-temporal denoiser (Eq. 4–7): width, depth, heads, kernels, audio look-ahead."""

    dim: int = Field(128, gt=0)
    num_blocks: int = Field(3, gt=0)  # 3 keeps DDIM-25 + guidance near RTF 0.1 on 2 CPU cores
    heads: int = Field(4, gt=0)
    region_dim: int = Field(64, gt=0)  # width of each region's attention branch (Eq. 4)
    local_kernel: int = Field(5, gt=0)  # Eq. 6, k = 5 in the paper
    temporal_kernel: int = Field(3, gt=0)  # Eq. 5, per depth-wise branch
    dilations: tuple[int, ...] = (1, 2, 4)  # Eq. 5, 2^i for i = 0..2
    look_ahead: int = Field(2, ge=0)  # audio frames after t the cross-attention may see (80 ms)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> DenoiserConfig:
        if self.dim % self.heads or self.region_dim % self.heads:
            raise ValueError("dim and region_dim must be divisible by heads")
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError("dilations must be non-empty positive integers")
        return self


class SyncConfig(StrictConfig):
    """Lip-sync expert (Eq. 10): window length, encoder widths, negative sampling."""

    window: int = Field(5, gt=0)  # frames per audio/lip window
    embed_dim: int = Field(128, gt=0)
    hidden: int = Field(256, gt=0)
    # negatives: lips shifted by min_shift..max_shift frames, or taken from another clip
    neg_min_shift: int = Field(4, gt=0)
    neg_max_shift: int = Field(20, gt=0)
    windows_per_clip: int = Field(8, gt=0)  # windows sampled per sequence per step

    @model_validator(mode="after")
    def _check(self) -> SyncConfig:
        if self.neg_max_shift < self.neg_min_shift:
            raise ValueError("neg_max_shift must be >= neg_min_shift")
        return self


class TrainConfig(StrictConfig):
    """Optimisation settings for the sync expert and the denoiser (paper Section IV.A)."""

    lr: float = Field(1e-4, gt=0)  # Adam, as in the paper
    sync_lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(32, gt=0)
    window: int = Field(80, gt=0)  # frames per training sequence (3.2 s at 25 fps)
    sync_weight: float = Field(0.01, ge=0)  # λ in L_total = L_noise + λ L_sync
    lip_weight: float = Field(1.0, gt=0)  # L_noise weight of the lip dims (others 1)
    velocity_weight: float = Field(0.0, ge=0)  # weight of the x0̂ frame-to-frame change loss
    audio_drop_prob: float = Field(0.1, ge=0, le=1)  # classifier-free guidance (Eq. 9)
    prefix_prob: float = Field(0.5, ge=0, le=1)  # share of sequences with a known prefix
    max_prefix: int = Field(20, ge=0)  # frames; covers the generator's window overlap
    region_prob: float = Field(0.2, ge=0, le=1)  # per region (eye, global): known from a reference
    grad_clip: float = Field(1.0, gt=0)
    sync_steps: int = Field(2000, ge=0)
    denoiser_steps: int = Field(20000, ge=0)
    # learning rate over each phase: constant (the paper), or cosine decay to lr_floor × lr
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_floor: float = Field(0.1, ge=0, le=1)
    seed: int = 0

    def lr_at(self, base: float, step: int, steps: int) -> float:
        """The learning rate of step ``step`` (0-based) of a phase of ``steps`` steps."""
        if self.lr_schedule == "constant" or steps <= 1:
            return base
        progress = min(max(step / (steps - 1), 0.0), 1.0)
        return base * (self.lr_floor + (1.0 - self.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * progress)))


class ModelConfig(StrictConfig):
    """Everything a trained system needs to rebuild its networks."""

    audio: AudioConfig = AudioConfig()
    denoiser: DenoiserConfig = DenoiserConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    sync: SyncConfig = SyncConfig()
    n_expression: int = Field(64, gt=0)  # N
    k_lip: int = Field(13, gt=0)  # K_lip (Eq. 1)
    k_eye: int = Field(8, ge=0)  # K_eye (Eq. 1); 0 with a one-region split (no disentanglement)

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.k_lip + self.k_eye > self.n_expression:
            raise ValueError("k_lip + k_eye must not exceed n_expression")
        return self
