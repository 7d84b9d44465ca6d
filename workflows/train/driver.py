"""The driver of ``disenttalk train``: reads the fit and the store, starts the Ray Train run."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from workflows.common import format_summary, user_errors
from workflows.platform import storage
from workflows.train.config import LoopInputs, TrainStageConfig, load_stage_config, model_config_for


def _absolute(uri: str) -> str:
    """``uri`` as workers see it: S3 as given, a local path made absolute (workers do not share
    the driver's working directory)."""
    return uri if storage.is_s3(uri) else str(Path(uri).expanduser().resolve())


def _loop_inputs(data: str, fit: str, out: str, cfg: TrainStageConfig, split: Any) -> LoopInputs:
    """What every worker's loop starts from: configs, the split, the normalisation statistics
    and the clips of the train and val splits."""
    from workflows.train import data as train_data

    train_rows = train_data.clip_rows(data, fit, "train")
    if not train_rows:
        raise ValueError(f"{data}: no clips in the train split")
    val_rows = train_data.clip_rows(data, fit, "val")
    feature_dim = int(train_rows[0]["feature_dim"])
    model_cfg = model_config_for(cfg.model, split, feature_dim)
    norm = train_data.norm_stats(data, fit, train_rows)
    return LoopInputs(stage=cfg, model=model_cfg, split=split, norm=norm, data=data, fit=fit, out=out,
                      train_rows=tuple(train_rows), val_rows=tuple(val_rows), feature_dim=feature_dim)


def _run_config(cfg: TrainStageConfig, out: str, callbacks: Sequence[Any]) -> Any:
    """Ray Train's ``RunConfig``: where checkpoints go, how many are kept, retries, worker env."""
    import ray.train

    from disenttalk.face.tracker import VERBOSE_ENV
    from workflows.platform import tracking
    from workflows.platform.raycluster import forwarded_env

    storage_path = cfg.run.storage_path or storage.join(out, "ray")
    env = forwarded_env()
    if cfg.mlflow.enabled:  # workers log to the same store the driver would use
        env["MLFLOW_TRACKING_URI"] = tracking.tracking_uri()
    # For S3, Ray takes the filesystem configured like every other stage's (endpoint, keys)
    # and the path without its scheme.
    fs = storage.s3_filesystem() if storage.is_s3(storage_path) else None
    return ray.train.RunConfig(
        name=cfg.run.name,
        storage_path=storage.filesystem(storage_path)[1] if fs else storage_path,
        storage_filesystem=fs,
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.num_to_keep),
        failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
        worker_runtime_env={"env_vars": env},
        # Ray Train's own progress lines ("Reporting training result ...") only with --verbose;
        # its warnings and errors always, and everything in the session's train/ log files.
        callbacks=list(callbacks),
        logging_config=ray.train.LoggingConfig(
            log_level="INFO" if os.environ.get(VERBOSE_ENV) else "WARNING"),
    )


def _fit(cfg: TrainStageConfig, inputs: LoopInputs, run_config: Any) -> tuple[Any, dict]:
    """Run the ``TorchTrainer``; its result and the work per Ray node ({} without the State API)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from workflows.platform.raycluster import (
        init_ray,
        shutdown_if_started,
        work_by_node,
        work_items,
    )
    from workflows.train.loop import train_loop_per_worker

    started = init_ray(cfg.ray)
    try:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"inputs": inputs},  # Ray Train passes a dict
            scaling_config=ray.train.ScalingConfig(
                num_workers=cfg.scaling.num_workers,
                use_gpu=cfg.scaling.use_gpu,
                resources_per_worker=cfg.scaling.resources(),
            ),
            run_config=run_config,
        )
        before = work_items()
        result = trainer.fit()
        return result, work_by_node(work_items(), before)  # where the workers ran
    finally:
        shutdown_if_started(started)


def _summary(cfg: TrainStageConfig, inputs: LoopInputs, result: Any, nodes: dict,
             out: str) -> dict[str, Any]:
    metrics = dict(result.metrics or {})
    return {
        "train_clips": len(inputs.train_rows),
        "val_clips": len(inputs.val_rows),
        "workers": cfg.scaling.num_workers,
        "sync_steps": cfg.train.sync_steps,
        "denoiser_steps": cfg.train.denoiser_steps,
        "resumed_from_step": metrics.get("resumed_from_step", 0),
        "final": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "checkpoint": result.checkpoint.path if result.checkpoint else None,
        "bundle": storage.join(out, "bundle"),
        "mlflow_run_id": metrics.get("mlflow_run_id"),
        **({"nodes": nodes} if nodes else {}),
    }


def run(data: str, fit: str, out: str, cfg: TrainStageConfig, split: Any = None,
        callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train both phases on Ray Train and write ``<out>/bundle``; returns the summary.

    ``split`` replaces the fit's region split (a sweep's K_lip / K_eye, re-selected from the
    fit's scores); ``callbacks`` are Ray Train ``UserCallback``s (a sweep's report to Tune)."""
    from workflows import fit as fit_stage

    start = time.perf_counter()
    data, fit, out = (_absolute(u) for u in (data, fit, out))
    inputs = _loop_inputs(data, fit, out, cfg, split or fit_stage.read_split(fit))
    storage.makedirs(out)
    result, nodes = _fit(cfg, inputs, _run_config(cfg, out, callbacks))
    return {**_summary(cfg, inputs, result, nodes, out), "seconds": time.perf_counter() - start}


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
