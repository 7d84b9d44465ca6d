"""The training config of a trial: the sweep's base train-stage config with the trial's searched
keys, the sweep's trial scaling, the trial's run folder and its nesting under the sweep's MLflow
run set on it. Every change is a typed update of the config object, validated like a loaded
config: an unknown key or a value of the wrong type is refused."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from disenttalk.config import ConfigError, StrictConfig
from tune.config import ALIASES, INFERENCE_KEYS, REGION_KEYS, SweepConfig
from tune.space import probe_params
from workflows.train import TrainStageConfig

C = TypeVar("C", bound=StrictConfig)


def train_values(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's searched train-stage keys by dotted name (λ as ``train.sync_weight``); the
    region keys and the inference-time keys are not train-stage keys."""
    return {ALIASES.get(key, key): value for key, value in params.items()
            if key not in REGION_KEYS and key not in INFERENCE_KEYS}


def with_values(config: C, values: Mapping[str, Any]) -> C:
    """``config`` with each dotted key (``train.lr``, ``model.denoiser.dim``) set to its value;
    every section on the way is validated again."""
    for dotted, value in values.items():
        config = _set(config, dotted.split("."), value, dotted)
    return config


def _set(node: Any, keys: list[str], value: Any, dotted: str) -> Any:
    head, rest = keys[0], keys[1:]
    if isinstance(node, StrictConfig):
        if head not in type(node).model_fields:
            raise ConfigError(f"{dotted}: {type(node).__name__} has no key {head!r}")
        new = _set(getattr(node, head), rest, value, dotted) if rest else value
        return type(node).from_dict({**node.to_dict(), head: _plain(new)})
    if isinstance(node, Mapping):
        new = _set(node.get(head, {}), rest, value, dotted) if rest else value
        return {**node, head: new}
    raise ConfigError(f"{dotted}: {head!r} is not a section")


def _plain(value: Any) -> Any:
    """Configs (also inside mappings) as their plain dicts."""
    if isinstance(value, StrictConfig):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def check_train_keys(cfg: SweepConfig, stage: TrainStageConfig) -> None:
    """Refuse searched keys the train stage does not have (or values it does not take), before
    any trial runs."""
    for params in probe_params(cfg):
        with_values(stage, train_values(params))


def trial_stage_config(stage: TrainStageConfig, cfg: SweepConfig, params: dict[str, Any], *, label: str,
                       run_name: str, storage_path: str, parent_run_id: str | None) -> TrainStageConfig:
    """The train-stage config of one trial: ``stage`` (the sweep's ``train`` overrides applied)
    with the trial's searched keys, the sweep's trial scaling, Ray Train checkpoints under
    ``storage_path`` as run ``run_name``, and its MLflow run named ``label`` under the sweep's."""
    searched = with_values(stage, train_values(params))
    mlflow: dict[str, Any] = {"enabled": cfg.mlflow.enabled, "experiment": cfg.mlflow.experiment, "run_name": label}
    if parent_run_id:
        mlflow["parent_run_id"] = parent_run_id
    return searched.model_copy(update={
        "scaling": searched.scaling.model_copy(update=cfg.trial.model_dump()),
        "run": searched.run.model_copy(update={"name": run_name, "storage_path": storage_path}),
        "ray": searched.ray.model_copy(update={"progress_bars": False}),
        "mlflow": searched.mlflow.model_copy(update=mlflow),
    })
