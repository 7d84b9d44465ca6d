"""Register stage: log a model bundle as an MLflow pyfunc model, register it, crown a champion.

The bundle directory travels as the pyfunc's ``bundle`` artifact, so anything that loads
``models:/disenttalk@champion`` (serving, ``disenttalk generate``) gets the exact bundle back
with :func:`resolve_bundle`. A new version takes the ``champion`` alias when it beats the
current champion on the chosen metric (or there is none); each version carries its evaluation
metrics as tags, so the comparison needs no other run.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from disenttalk.bundle import CONFIG, DENOISER
from disenttalk.constants import CHAMPION_ALIAS, MODEL_NAME
from workflows.common import UserError, user_errors
from workflows.platform import storage, tracking

CHAMPION = CHAMPION_ALIAS
METRIC_TAG_PREFIX = "metric."

def better(candidate: float, incumbent: float | None, mode: str) -> bool:
    """Whether ``candidate`` beats ``incumbent`` (None or NaN incumbent: always)."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', not {mode!r}")
    if incumbent is None or math.isnan(incumbent):
        return not math.isnan(candidate)
    return candidate < incumbent if mode == "min" else candidate > incumbent


def flat_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``{split: {metric: v}}`` → ``{"split/metric": v}`` (already-flat keys pass through)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            for sub, v in flat_metrics(value).items():
                flat[f"{key}/{sub}"] = v
        elif isinstance(value, (int, float)):
            flat[key] = float(value)
    return flat


def champion_metric(client: Any, name: str, metric: str) -> tuple[str | None, float | None]:
    """(version, metric value) of the current champion, or (None, None)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None, None
    raw = version.tags.get(tracking.metric_name(METRIC_TAG_PREFIX + metric))
    return version.version, (float(raw) if raw is not None else None)


def register(
    bundle: str,
    metrics: Mapping[str, Any] | None = None,
    *,
    metric: str = "test/lmd",
    mode: str = "min",
    name: str = MODEL_NAME,
    experiment: str = "disenttalk",
    promote: bool | None = None,
) -> dict[str, Any]:
    """Log ``bundle`` as a pyfunc, register a version of ``name``, move ``champion`` if it wins
    on ``metric`` (or, when ``promote`` is given, as the caller decided by its own rule)."""
    import mlflow
    from mlflow import MlflowClient

    from workflows.pyfunc_model import DisentTalkPyfunc

    flat = flat_metrics(metrics or {})
    with _local_bundle(bundle) as local, tracking.start_run(
        tracking.MlflowConfig(experiment=experiment, run_name="register")
    ) as tracker:
        tracker.log_metrics({k.replace("/", "."): v for k, v in flat.items()})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=DisentTalkPyfunc(),
            artifacts={"bundle": str(local)},
            registered_model_name=name,
        )
        run_id = tracker.run_id
    client = MlflowClient()
    version = str(info.registered_model_version)
    for key, value in flat.items():
        client.set_model_version_tag(name, version, tracking.metric_name(METRIC_TAG_PREFIX + key), str(value))
    client.set_model_version_tag(name, version, "source_bundle", str(bundle))
    previous, incumbent = champion_metric(client, name, metric)
    candidate = flat.get(metric, math.nan)
    crowned = previous is None or (better(candidate, incumbent, mode) if promote is None else promote)
    if crowned:
        client.set_registered_model_alias(name, CHAMPION, version)
    return {
        "model": name,
        "version": version,
        "run_id": run_id,
        "model_uri": f"models:/{name}/{version}",
        "champion": crowned,
        "previous_champion": previous,
        "metric": metric,
        "value": candidate,
        "incumbent": incumbent,
    }


@contextmanager
def _local_bundle(uri: str) -> Iterator[Path]:
    """The bundle as a local folder (a temporary download for s3://)."""
    if not storage.is_s3(uri):
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield storage.download_dir(uri, Path(tmp) / "bundle")


def resolve_bundle(uri: str, workdir: str | Path | None = None) -> Path:
    """A local bundle directory for a path, ``s3://`` URI, ``models:/name@alias`` or ``runs:/`` URI.

    Remote bundles are downloaded under ``workdir`` (a new temporary folder if None).
    """
    if uri.startswith(("models:/", "runs:/", "s3://")):
        workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="disenttalk-bundle-"))
    if uri.startswith(("models:/", "runs:/")):
        import mlflow
        from mlflow.exceptions import MlflowException

        tracking.check_server()
        mlflow.set_tracking_uri(tracking.tracking_uri())
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(workdir)))
        except MlflowException as exc:
            raise UserError(f"{uri}: {exc.message} (tracking: {tracking.tracking_uri()}; "
                            f"{_known_models()})") from None
    elif storage.is_s3(uri):
        local = storage.download_dir(uri, Path(workdir) / "bundle")
    else:
        local = Path(uri)
    # A registered model wraps the bundle; find the folder that holds its config and weights.
    for candidate in [local, *sorted(p.parent for p in local.rglob(DENOISER))]:
        if (candidate / CONFIG).is_file() and (candidate / DENOISER).is_file():
            return candidate
    raise FileNotFoundError(f"no model bundle ({CONFIG} + {DENOISER}) under {uri}")


def _known_models() -> str:
    """The registered models and their aliases, for an error message."""
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking.tracking_uri())
        known = [f"{m.name}@{alias}" for m in client.search_registered_models()
                 for alias in sorted(getattr(m, "aliases", {}) or {})]
    except Exception:  # noqa: BLE001 - only decorates a message
        return "registered models unknown"
    return "registered: " + (", ".join(known) if known else "none")


@user_errors("register")
def cli(
    bundle: str = typer.Option(..., help="Bundle directory (local or s3://)."),
    metrics: str | None = typer.Option(None, help="metrics.json from the evaluate stage."),
    metric: str = typer.Option("test/lmd", help="Metric that decides the champion ('split/metric')."),
    mode: str = typer.Option("min", help="'min' if lower is better, else 'max'."),
    name: str = typer.Option(MODEL_NAME, help="Registered model name."),
) -> None:
    """Register a bundle in the MLflow registry; alias it 'champion' if it beats the current one."""
    values = json.loads(storage.read_text(metrics)) if metrics else {}
    result = register(bundle, values, metric=metric, mode=mode, name=name)
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":  # Ray job entrypoint: python -m workflows.register ...
    typer.run(cli)
