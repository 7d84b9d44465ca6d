"""What ``evaluate`` scores and how: the config, the names of the scored systems, per-clip seeds."""

from __future__ import annotations

import math
import zlib
from typing import Literal

from pydantic import Field

from disenttalk.config import StrictConfig
from disenttalk.constants import DEFAULT_STEPS
from disenttalk.metrics.sync import EvaluatorConfig
from workflows.platform.raycluster import RayConfig
from workflows.platform.tracking import MlflowConfig

SYSTEM = "model"
# scored like the model: "truth" (the clip itself), "oracle" (the truth's motion encoded with the
# bundle's morphable model and rendered + re-tracked exactly like the model's: the best the
# model could score through this render path), "still" (no motion), "shifted" (truth delayed)
REFERENCES = ("truth", "oracle", "still", "shifted")


def clip_seed(seed: int, clip_id: str) -> int:
    """The sampler seed of one clip: ``seed`` plus a number from its id, so clips scored together
    do not share their noise, nor (the seed picks them) the corpus blinks' timing."""
    return int(seed) + zlib.crc32(clip_id.encode()) % 100_000


def gap_closed(model: float, still: float, oracle: float) -> float:
    """(still − model) / (still − oracle): 0 = no better than a still face, 1 = as good as the
    truth's own motion through the same render path; NaN when the two references coincide."""
    span = still - oracle
    if not (math.isfinite(model) and math.isfinite(span)) or span <= 0:
        return math.nan
    return float((still - model) / span)


class EvaluateConfig(StrictConfig):
    """What to score and how: splits, clip caps, sampler settings, metric options, Ray, MLflow."""

    splits: tuple[str, ...] = ("val", "test", "test_xling", "test_voice")
    per_language: tuple[str, ...] = ("test",)  # these splits are also reported per language
    per_voice: tuple[str, ...] = ("test", "test_voice")  # ... and per voice (corpus manifest's)
    max_clips_per_split: int = Field(8, gt=0)
    sampler: Literal["ddim", "ddpm"] = "ddim"
    steps: int = Field(DEFAULT_STEPS, gt=0)
    spacing: Literal["uniform", "quadratic"] = "quadratic"  # DDIM timesteps (diffusion.DEFAULT_SPACING)
    guidance: float | None = None  # None: the bundle's tuned value
    eta: float | None = None  # DDIM η; None: the bundle's default
    seed: int = 0  # each clip samples with clip_seed(seed, clip_id)
    # the model's blink rate is the mean over this many samples (seeds seed, seed+1, ...): one
    # sample's blink count swings by tens of percent between seeds
    blink_samples: int = Field(2, gt=0)
    # where the model's blink rate comes from: "corpus" = the bundle's own (the training corpus's
    # blinks at their rate); "speaker" = the model is told the rate measured on the same speaker's
    # other clips in the store (tracked landmarks, as `generate --blinks-like VIDEO` measures a
    # user's reference video of the person). Blink rate is a trait of the person that neither the
    # audio nor the photo shows; a clip whose speaker has no other clip keeps the corpus rate.
    blink_reference: Literal["corpus", "speaker"] = "corpus"
    # the image the model animates: "portrait" = the speaker's photo named by the corpus manifest,
    # "first_frame" = the clip's first frame, "auto" = the photo where there is one
    reference: Literal["auto", "portrait", "first_frame"] = "auto"
    fidelity: bool = True  # also generate with the source's pose and eyes for PSNR/SSIM
    baselines: bool = True  # also score oracle / still / shifted (the oracle costs a render per clip)
    shift_seconds: float = Field(0.5, gt=0)
    max_offset: int = Field(15, gt=0)  # sync sweep ±frames
    cpbd_stride: int = Field(5, gt=0)  # CPBD on every n-th frame
    image_stride: int = Field(5, gt=0)  # PSNR/SSIM on every n-th frame
    num_cpus_per_clip: float = Field(1.0, gt=0)
    num_gpus_per_clip: float = Field(0.0, ge=0)  # e.g. 0.25: four clips share a GPU
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")  # the generator's: CUDA when the task has a GPU
    evaluator: EvaluatorConfig = EvaluatorConfig()
    ray: RayConfig = RayConfig()
    mlflow: MlflowConfig = MlflowConfig()
