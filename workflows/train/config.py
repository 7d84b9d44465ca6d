"""Config of ``disenttalk train``: the model, the training schedule, Ray Train scaling and runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from disenttalk.augment import AugmentConfig
from disenttalk.config import StrictConfig, apply_overrides
from disenttalk.face.regions import RegionSplit
from disenttalk.model.config import ModelConfig, TrainConfig
from workflows.common import default_config_path
from workflows.platform.raycluster import RayConfig
from workflows.platform.tracking import MlflowConfig


class ScalingSection(StrictConfig):
    """Ray Train workers: how many, and what each reserves."""

    num_workers: int = Field(2, gt=0)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, ge=0)  # used only with use_gpu

    def resources(self) -> dict[str, float]:
        """``resources_per_worker`` for ``ScalingConfig``."""
        res = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            res["GPU"] = self.gpus_per_worker
        return res


class RunSection(StrictConfig):
    """Where checkpoints live and how often they are taken."""

    name: str = "disenttalk-train"  # Ray Train run name: same name + storage = resume
    storage_path: str | None = None  # local folder or s3:// prefix; default <out>/ray
    checkpoint_every: int = Field(500, gt=0)  # steps between report + checkpoint
    log_every: int = Field(50, gt=0)  # steps between MLflow metric points (rank 0)
    num_to_keep: int = Field(2, gt=0)
    max_failures: int = Field(2, ge=-1)  # -1: retry forever
    val_batches: int = Field(4, ge=0)  # validation batches at each checkpoint (rank 0)


class TrainStageConfig(StrictConfig):
    """Config of ``disenttalk train`` (``configs/train.yaml``)."""

    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    # audio augmentation of the training clips (both phases); validation clips never
    augment: AugmentConfig = AugmentConfig()
    scaling: ScalingSection = ScalingSection()
    run: RunSection = RunSection()
    ray: RayConfig = RayConfig()
    mlflow: MlflowConfig = MlflowConfig(experiment="disenttalk-train")


def load_stage_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> TrainStageConfig:
    """``path`` (default ``configs/train.yaml``) with ``configs/model.yaml`` as its model section
    unless it has one, then ``--set`` overrides."""
    path = path or (default_config_path("train") if default_config_path("train").exists() else None)
    data = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    if "model" not in data and default_config_path("model").exists():
        data["model"] = yaml.safe_load(default_config_path("model").read_text())
    return TrainStageConfig.from_dict(apply_overrides(data, overrides))


def model_config_for(cfg: ModelConfig, split: Any, feature_dim: int) -> ModelConfig:
    """The model config with N, K_lip, K_eye from the fitted split, checked against the features."""
    if feature_dim <= 0:
        raise ValueError("the clip store has no audio features; run preprocess with a frontend")
    if cfg.audio.frontend == "mel":  # cheap to build; HuBERT would load its weights
        from disenttalk.audio import make_frontend

        expected = make_frontend(cfg.audio).feature_dim
        if expected != feature_dim:
            raise ValueError(f"model.audio gives {expected}-d features but the clip store holds "
                             f"{feature_dim}-d ones: use the preprocess stage's audio settings")
    return cfg.with_overrides(
        [f"n_expression={split.num_dims}", f"k_lip={len(split.lip)}", f"k_eye={len(split.eye)}"])


@dataclass(frozen=True)
class LoopInputs:
    """What every Ray Train worker's loop starts from, resolved once in the driver: the stage
    config, the model config with the fit's N, K_lip and K_eye, the region split, the training
    clips' normalisation statistics, absolute (or s3://) locations and the clip rows of the
    train and val splits."""

    stage: TrainStageConfig
    model: ModelConfig
    split: RegionSplit
    norm: Mapping[str, Any]  # name → float32 array (workflows.train.data.norm_stats)
    data: str
    fit: str
    out: str
    train_rows: tuple[dict[str, Any], ...]
    val_rows: tuple[dict[str, Any], ...]
    feature_dim: int
