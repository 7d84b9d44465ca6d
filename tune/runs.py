"""The sweep's MLflow runs: its own run (created, or resumed with the sweep), the trials' runs
nested under it (closed with their stop reasons), and what the sweep's run holds at the end."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from tune.config import SweepConfig
from tune.report import OUTPUTS
from workflows.platform import storage


def open_parent(cfg: SweepConfig, tracking_uri: str, run_id: str | None, tags: dict[str, str]) -> tuple[Any, str | None]:
    """(client, run id) of the sweep's run: ``run_id`` resumed, else a new run with ``tags`` and
    the config as params; (None, None) without tracking."""
    if not cfg.mlflow.enabled:
        return None, None
    from mlflow import MlflowClient

    from workflows.platform import tracking

    experiment_id = tracking.setup(cfg.mlflow.experiment)
    client = MlflowClient(tracking_uri=tracking_uri)  # through the client: registering uses the fluent API
    if run_id:
        client.update_run(run_id, status="RUNNING")
        return client, run_id
    run_id = client.create_run(experiment_id, run_name=cfg.name, tags=tags).info.run_id
    for key, value in tracking.config_params(cfg).items():
        client.log_param(run_id, key, value)
    return client, run_id


def close_trial_runs(table: list[dict], cfg: SweepConfig, tracking_uri: str) -> None:
    """Trials' MLflow runs: the stop reason as a tag; runs of stopped trials marked KILLED."""
    if not cfg.mlflow.enabled:
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    for row in table:
        run_id = row.get("mlflow_run_id")
        if not run_id:
            continue
        client.set_tag(run_id, "stop_reason", row["status"])
        client.set_tag(run_id, "sweep.trial", row["trial"])
        if row["status"] != "completed" and client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")


def outcome_metrics(outcome: dict, report: list[dict]) -> dict[str, float]:
    """The sweep run's metrics: trial counts, the best's and the champion's scores, the report's."""
    from workflows.register import flat_metrics

    numbers = flat_metrics({k: outcome[k] for k in ("trials", "completed", "stopped_early", "failed")})
    champion = outcome.get("champion")
    if champion:
        numbers |= {f"best.{k.replace('/', '.')}": v for k, v in flat_metrics(champion["best"]).items()}
        if champion["champion"]:
            numbers |= {f"champion.{k.replace('/', '.')}": v for k, v in flat_metrics(champion["champion"]).items()}
    for row in report:
        numbers |= {f"report.{row['system']}.{k.replace('/', '.')}": v for k, v in row.items()
                    if isinstance(v, float)}
    return numbers


def close_parent(client: Any, run_id: str, out: str, outcome: dict, report: list[dict]) -> None:
    """The sweep's files as artefacts of its run, its outcome as metrics and tags; the run finished."""
    for name in (*OUTPUTS, *(["report.md"] if report else [])):
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, name).write_bytes(storage.read_bytes(storage.join(out, name)))
            client.log_artifact(run_id, str(Path(tmp, name)))
    champion = outcome.get("champion")
    if champion:
        client.set_tag(run_id, "registered_version", champion["registered_version"])
        client.set_tag(run_id, "champion_moved", str(champion["champion_moved"]))
    for key, value in outcome_metrics(outcome, report).items():
        if math.isfinite(value):
            client.log_metric(run_id, key, value)
    client.set_terminated(run_id, "FINISHED")
