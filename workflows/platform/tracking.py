"""MLflow setup shared by all stages: where runs go, how configs become params, artifacts.

The tracking URI is ``MLFLOW_TRACKING_URI`` when set (a server on a cluster), else a sqlite
database in the workspace (``sqlite:///<home>/mlflow.db``; MLflow 3 deprecates the file
store). Artifacts of a sqlite-backed experiment live beside the database, not in the current
directory, so runs started from different folders land in one place.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from disenttalk import paths
from disenttalk.config import StrictConfig, flatten
from workflows.common import UserError

MAX_PARAM_CHARS = 6000  # MLflow's limit on one param value


def metric_name(key: str) -> str:
    """``key`` with every character MLflow does not allow in a metric name replaced by ``_``."""
    return re.sub(r"[^\w\-. :/]", "_", key)


class MlflowConfig(StrictConfig):
    """Which experiment a stage logs to; ``enabled: false`` turns tracking off."""

    enabled: bool = True
    experiment: str = "disenttalk"
    run_name: str | None = None
    parent_run_id: str | None = None  # nest the run under this one (a sweep's trials)


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` or the workspace sqlite database."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.home() / 'mlflow.db'}"


def check_server(uri: str | None = None, timeout: float = 5.0) -> None:
    """For an ``http(s)://`` tracking URI: fail fast with a clear :class:`UserError` when the
    server does not answer its ``/health`` endpoint (MLflow's client would retry for minutes)."""
    import urllib.error
    import urllib.request

    uri = uri or tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return  # it answers (a proxy may not route /health): let MLflow talk to it
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"MLflow tracking server {uri} is unreachable ({reason}); start it, or "
                        "unset MLFLOW_TRACKING_URI to track in the local workspace") from None


def _artifact_root(uri: str) -> str | None:
    """For a local sqlite store: ``mlartifacts/`` beside the database; else the server decides."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :])
    return (db.parent / "mlartifacts").resolve().as_uri()


def setup(experiment: str) -> str:
    """Point MLflow at :func:`tracking_uri`, create/select ``experiment``; returns its id."""
    import mlflow

    uri = tracking_uri()
    check_server(uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        exp_id = found.experiment_id
    else:
        root = _artifact_root(uri)
        location = f"{root}/{experiment}" if root else None
        exp_id = mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def config_params(config: StrictConfig | Mapping[str, Any]) -> dict[str, str]:
    """Flattened dotted keys → strings, as MLflow params (long values truncated to fit)."""
    flat = config.flatten() if isinstance(config, StrictConfig) else flatten(config)
    return {k: str(v)[:MAX_PARAM_CHARS] for k, v in flat.items()}


class Tracker:
    """Logging calls of one run; every method is a no-op when tracking is disabled."""

    def __init__(self, run: Any | None) -> None:
        self.run = run

    @property
    def run_id(self) -> str | None:
        """The MLflow run id (None when disabled)."""
        return self.run.info.run_id if self.run is not None else None

    def log_params(self, params: StrictConfig | Mapping[str, Any]) -> None:
        """Log a config (flattened) or a mapping as params."""
        if self.run is not None:
            import mlflow

            mlflow.log_params(config_params(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log numeric metrics (non-numbers are skipped); characters MLflow refuses in a name
        (an espeak-ng voice's ``+``, say) become ``_`` (:func:`metric_name`)."""
        if self.run is None:
            return
        import mlflow

        numeric = {metric_name(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Log a local file or folder."""
        if self.run is None:
            return
        import mlflow

        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_bytes(self, name: str, data: bytes, artifact_path: str | None = None) -> None:
        """Log in-memory bytes (e.g. a file read from S3) as an artifact called ``name``."""
        if self.run is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp, name)
            file.write_bytes(data)
            self.log_artifact(file, artifact_path)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        """Log a JSON/YAML artifact."""
        if self.run is not None:
            import mlflow

            mlflow.log_dict(dict(data), name)

    def log_figure(self, figure: Any, name: str) -> None:
        """Log a matplotlib figure as a PNG artifact."""
        if self.run is not None:
            import mlflow

            mlflow.log_figure(figure, name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags."""
        if self.run is not None:
            import mlflow

            mlflow.set_tags({k: str(v) for k, v in tags.items()})


@contextmanager
def start_run(
    cfg: MlflowConfig,
    params: StrictConfig | Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[Tracker]:
    """Open a run in ``cfg.experiment`` with ``params`` logged; yields a :class:`Tracker`."""
    if not cfg.enabled:
        yield Tracker(None)
        return
    import mlflow

    setup(cfg.experiment)
    with mlflow.start_run(run_name=cfg.run_name, parent_run_id=cfg.parent_run_id) as run:
        tracker = Tracker(run)
        if params is not None:
            tracker.log_params(params)
        if tags:
            tracker.set_tags(tags)
        yield tracker
