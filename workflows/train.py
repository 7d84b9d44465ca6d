"""``disenttalk train``: the sync expert, then the denoiser with the frozen expert, on Ray Train.

The driver reads the fit outputs (region split, morphable model) and the training split's
expression arrays, computes the normalisation statistics (mean/std per expression dim over
every valid training frame), and starts one ``TorchTrainer`` run whose workers execute
:func:`workflows.train_loops.train_loop_per_worker`. Checkpoints go to
``<storage_path>/<run_name>``; starting the same command again (same name and storage)
resumes from the latest checkpoint, and ``FailureConfig(max_failures)`` restarts the
worker group from it after a worker dies. Rank 0 logs to MLflow and writes the model bundle
to ``<out>/bundle``.

Data: each worker reads its own share of the training clips (``clips[rank::world]``) from the
store URIs and samples W-frame windows with a generator seeded by (seed, rank, step). A step
budget over randomly placed windows of variable-length clips is what the paper's training
does; seeding by step makes a resumed run draw exactly the batches the lost one would have,
and no Ray Data tasks compete with the workers for CPUs while they train.

Also a Ray job entrypoint: ``python -m workflows.train --data URI --fit URI --out URI``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import Field

from disenttalk.config import StrictConfig, apply_overrides
from disenttalk.model.config import ModelConfig, TrainConfig
from workflows import storage
from workflows.common import default_config_path, format_summary, user_errors
from workflows.raycluster import RayConfig
from workflows.tracking import MlflowConfig


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


def run(data: str, fit: str, out: str, cfg: TrainStageConfig) -> dict[str, Any]:
    """Train both phases on Ray Train and write ``<out>/bundle``; returns the summary."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from workflows import fit as fit_stage
    from workflows import tracking, train_data
    from workflows.raycluster import forwarded_env, init_ray, shutdown_if_started
    from workflows.train_loops import train_loop_per_worker

    start = time.perf_counter()
    # workers do not share the driver's working directory: hand them absolute locations
    data, fit, out = (u if storage.is_s3(u) else str(Path(u).expanduser().resolve())
                      for u in (data, fit, out))
    split = fit_stage.read_split(fit)
    train_rows = train_data.clip_rows(data, fit, "train")
    if not train_rows:
        raise ValueError(f"{data}: no clips in the train split")
    val_rows = train_data.clip_rows(data, fit, "val")
    feature_dim = int(train_rows[0]["feature_dim"])
    model_cfg = model_config_for(cfg.model, split, feature_dim)
    norm = train_data.norm_stats(data, fit, train_rows)
    storage.makedirs(out)
    storage_path = cfg.run.storage_path or storage.join(out, "ray")

    env = forwarded_env()
    if cfg.mlflow.enabled:  # workers log to the same store the driver would use
        env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()

    loop_config = {
        "stage": cfg.to_dict(),
        "model": model_cfg.to_dict(),
        "split": split.to_dict(),
        "norm": {k: v.tolist() for k, v in norm.items()},
        "data": data,
        "fit": fit,
        "out": out,
        "train_rows": train_rows,
        "val_rows": val_rows,
        "feature_dim": feature_dim,
    }
    # For S3, Ray takes the filesystem configured like every other stage's (endpoint, keys)
    # and the path without its scheme.
    fs = storage.s3_filesystem() if storage.is_s3(storage_path) else None
    run_config = ray.train.RunConfig(
        name=cfg.run.name,
        storage_path=storage.filesystem(storage_path)[1] if fs else storage_path,
        storage_filesystem=fs,
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.num_to_keep),
        failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
        worker_runtime_env={"env_vars": env},
    )

    started = init_ray(cfg.ray)
    try:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config=loop_config,
            scaling_config=ray.train.ScalingConfig(
                num_workers=cfg.scaling.num_workers,
                use_gpu=cfg.scaling.use_gpu,
                resources_per_worker=cfg.scaling.resources(),
            ),
            run_config=run_config,
        )
        result = trainer.fit()
    finally:
        shutdown_if_started(started)

    metrics = dict(result.metrics or {})
    return {
        "train_clips": len(train_rows),
        "val_clips": len(val_rows),
        "workers": cfg.scaling.num_workers,
        "sync_steps": cfg.train.sync_steps,
        "denoiser_steps": cfg.train.denoiser_steps,
        "resumed_from_step": metrics.get("resumed_from_step", 0),
        "final": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "bundle": storage.join(out, "bundle"),
        "mlflow_run_id": metrics.get("mlflow_run_id"),
        "seconds": time.perf_counter() - start,
    }


@user_errors("train")
def cli(
    data: str = typer.Option(..., help="preprocessed clip store: local folder or s3:// prefix"),
    fit: str = typer.Option(..., help="fit outputs (morphable model, regions, expressions)"),
    out: str = typer.Option(..., help="output folder or s3:// prefix (bundle, checkpoints)"),
    config: Path | None = typer.Option(None, help="YAML config (default configs/train.yaml)"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. train.sync_steps=100"),
) -> None:
    """Train the lip-sync expert, then the denoiser, on Ray Train; write the model bundle."""
    cfg = load_stage_config(config, set_)
    summary = run(data, fit, out, cfg)
    typer.echo(format_summary("train", summary))


if __name__ == "__main__":  # Ray job entrypoint
    typer.run(cli)
