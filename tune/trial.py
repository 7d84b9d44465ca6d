"""One trial of a sweep (a Tune function trainable): train with the trial's region split and keys
on Ray Train, choose its inference settings on the objective split, report the scores."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from disenttalk.bundle import META
from disenttalk.config import StrictConfig
from tune.config import INFERENCE_KEYS, METRIC, SweepConfig
from tune.scoring import Yardstick, feasible, rank_key
from tune.space import inference_grid, trial_id, trial_params, trial_split, variant_inference
from tune.training import trial_stage_config
from workflows.platform import storage
from workflows.train import TrainStageConfig


class TrialInputs(StrictConfig):
    """What every trial of a sweep shares, resolved once in the driver (``tune.with_parameters``
    puts it in the object store): locations absolute or s3://, the MLflow tracking URI the
    driver logs to, and the configs."""

    sweep: SweepConfig
    stage: TrainStageConfig  # the train stage with the sweep's ``train`` overrides
    fit: str
    root: str  # the sweep's output folder: trial folders go under <root>/trials
    rows: list[dict[str, Any]]  # the objective split's clips
    yardstick: Yardstick  # the clip store, the shared evaluator, the corpus info, the settings
    tracking_uri: str
    parent_run_id: str | None = None  # the sweep's MLflow run


def _report_callback() -> Any:
    """A Ray Train callback passing denoiser-phase reports on to Tune (sync-phase ones have no
    lip metric for the scheduler to compare)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class DenoiserReports(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and metrics[0].get("phase") == "denoiser":
                super().after_report(run_context, metrics, checkpoint)

    return DenoiserReports()


def note_start(folder: str) -> None:
    """One line per (re)start of a trial in ``<folder>/starts.log``."""
    starts = storage.join(folder, "starts.log")
    previous = storage.read_text(starts) if storage.exists(starts) else ""
    storage.write_text(starts, previous + f"{time.time():.0f}\n")


def train(inputs: TrialInputs, label: str, tid: str, params: dict[str, Any], folder: str) -> dict[str, Any]:
    """The trial's Ray Train run (its bundle under ``<folder>/bundle``); returns the train summary."""
    import os

    from workflows import fit as fit_stage
    from workflows.train import run as train_run

    if inputs.sweep.mlflow.enabled:  # the train stage logs where the sweep's driver does
        os.environ["MLFLOW_TRACKING_URI"] = inputs.tracking_uri
    stage = trial_stage_config(inputs.stage, inputs.sweep, params, label=label, run_name=tid,
                               storage_path=storage.join(folder, "ray"), parent_run_id=inputs.parent_run_id)
    split = trial_split(fit_stage.read_split(inputs.fit), params)
    return train_run(inputs.yardstick.data, inputs.fit, folder, stage, split=split, callbacks=[_report_callback()])


def search_inference(inputs: TrialInputs, label: str, bundle: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score ``bundle`` at every inference setting of the trial: (the best row by the objective, every row)."""
    table = []
    for setting in inference_grid(variant_inference(inputs.sweep, label)):
        scores, _ = inputs.yardstick.score(bundle, inputs.rows, desc=f"{label} {setting}", **setting)
        table.append({**setting, **scores})
    return min(table, key=lambda r: rank_key(r, inputs.sweep.objective)), table


def write_meta(bundle: str, **fields: Any) -> None:
    """Set ``fields`` in a bundle's meta.json (local folder or s3://)."""
    from disenttalk.bundle import update_meta

    if not storage.is_s3(bundle):
        update_meta(bundle, **fields)
        return
    uri = storage.join(bundle, META)
    meta = {**json.loads(storage.read_text(uri)), **fields}
    storage.write_text(uri, json.dumps(meta, indent=2, sort_keys=True, default=str))


def log_trial(inputs: TrialInputs, run_id: str | None, label: str, numbers: dict[str, Any]) -> None:
    """The trial's objective and chosen settings as metrics of its training run, with its label and
    ``stop_reason: completed`` as tags."""
    if not (run_id and inputs.sweep.mlflow.enabled):
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=inputs.tracking_uri)  # the store the training run logged to
    for key, value in numbers.items():
        if isinstance(value, float) and math.isfinite(value):
            client.log_metric(run_id, key.replace("/", "."), value)
    client.set_tag(run_id, "stop_reason", "completed")
    client.set_tag(run_id, "sweep.trial", label)


def run_trial(config: dict[str, Any], inputs: TrialInputs) -> None:
    """One trial: train with the trial's split and keys, then choose its inference settings on the
    objective split and report the scores (``config``: the trial's point of Tune's param space)."""
    from ray import tune

    cfg = inputs.sweep
    label, params = trial_params(config, cfg.variants)
    tid = trial_id(params)
    folder = storage.join(inputs.root, "trials", tid)
    storage.makedirs(folder)
    note_start(folder)
    summary = train(inputs, label, tid, params, folder)
    bundle = summary["bundle"]
    best, table = search_inference(inputs, label, bundle)
    chosen = {k: best[k] for k in INFERENCE_KEYS if k in best}
    write_meta(bundle, **chosen, sweep={"trial": label, "params": params, "objective_split": cfg.objective.split,
                                        "inference_search": table})
    final = {f"objective/{k}": v for k, v in best.items() if k not in INFERENCE_KEYS}
    log_trial(inputs, summary.get("mlflow_run_id"), label, {**final, **{f"chosen/{k}": v for k, v in chosen.items()}})
    last = summary["final"]
    tune.report({METRIC: last.get(METRIC, math.nan), "phase": "scored", "step": last.get("step"),
                 "mlflow_run_id": summary.get("mlflow_run_id"), "bundle": bundle, "trial_id": tid,
                 "feasible": feasible(best, cfg.objective), **chosen, **final,
                 "inference_table": json.dumps(table)})
