"""Connecting a stage to Ray: an existing cluster (``RAY_ADDRESS``) or a local one.

Workers on a cluster do not share the driver's environment, so the settings that locate
storage and tracking (``AWS_*``, ``MLFLOW_TRACKING_URI``, ``DISENTTALK_HOME``, offline flags)
are forwarded to them through the job's ``runtime_env``. The locations are resolved once, here
in the driver (:func:`locations`): a worker runs in another working directory, so a default it
computed itself (a workspace under its current directory) would be another, empty one.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field

from disenttalk.config import StrictConfig

# Environment that workers need to reach the same S3 endpoint, MLflow server and workspace.
FORWARDED_ENV = (
    "DISENTTALK_VERBOSE",  # native libraries' log chatter (MediaPipe) shown in workers too
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
    "DISENTTALK_HOME",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


class RayConfig(StrictConfig):
    """How to reach Ray. ``RAY_ADDRESS`` (set by ``ray job submit``) wins over ``address``."""

    address: str | None = None  # e.g. "ray://head:10001" or "auto"; None → start a local cluster
    num_cpus: int | None = 2  # local cluster only
    num_gpus: int | None = None  # local cluster only
    # local cluster only; the dashboard also serves the State API, which Ray Train needs to free
    # the resources of a run whose driver was killed (a sweep's early-stopped trials)
    include_dashboard: bool = False
    dashboard_port: int | None = None  # None: a free port on 127.0.0.1
    progress_bars: bool = True
    # local cluster only: an object up to this size travels inside the call that passes or
    # returns it instead of through the shared object store (Ray's max_direct_call_object_size,
    # 100 KB by default). A store object a process reads stays mapped in it, so a long-running
    # process that reads many megabyte-sized objects (a Serve ingress: request bodies, videos)
    # grows in RSS by the store pages it has touched; inline, the bytes are its own heap and go
    # back when freed. None: Ray's default. On a cluster started elsewhere set
    # RAY_max_direct_call_object_size (bytes) in every node's environment.
    inline_object_kb: int | None = Field(None, ge=1, le=262_144)
    # local cluster only: Ray's own metrics (the Prometheus series behind the dashboard's and
    # Grafana's panels; Ray's enable_metrics_collection). With them a Serve ingress grows by
    # about half a megabyte of native memory for each replica ever started behind it
    # (autoscaling, restarts; Serve labels some series by replica), and recording them costs
    # every request CPU. Serve's autoscaling does not read them. On a cluster started elsewhere
    # set RAY_enable_metrics_collection=0 in every node's environment.
    metrics: bool = True


# Ray Train's placement-group cleaner asks the State API (served by the dashboard) once a
# second whether the train controller lives; on a local cluster without the dashboard every
# ask fails and logs the same warning, hundreds of lines per run.
_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
_CLEANER_NOISE = "State API may be temporarily unavailable"


class _DropMessage:
    """logging filter: drops records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def filter(self, record) -> bool:
        return self.text not in record.getMessage()


def quiet_state_api_warnings() -> None:
    """Worker setup hook of a dashboard-less local cluster: silence the cleaner's State API warning."""
    import logging

    logging.getLogger(_CLEANER_LOGGER).addFilter(_DropMessage(_CLEANER_NOISE))


def locations() -> dict[str, str]:
    """Where this driver keeps state, as absolute locations: the workspace (``DISENTTALK_HOME``)
    and the MLflow tracking URI, each the driver's setting or default."""
    from disenttalk import paths
    from workflows.platform.tracking import tracking_uri

    return {"DISENTTALK_HOME": str(paths.home()), "MLFLOW_TRACKING_URI": tracking_uri()}


def forwarded_env() -> dict[str, str]:
    """The subset of :data:`FORWARDED_ENV` set in this process (what a job submitted to a remote
    cluster takes along: the submitting machine's defaults mean nothing there)."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


def worker_env() -> dict[str, str]:
    """What the workers of this driver's Ray session get: :func:`forwarded_env`, and the
    locations resolved here (:func:`locations`) where they are not set."""
    return {**locations(), **forwarded_env()}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_env_vars() -> dict[str, str]:
    """The ``env_vars`` of the runtime env of the Ray job this driver runs in ({} outside a job:
    ``ray job submit`` hands the job's config to its entrypoint in ``RAY_JOB_CONFIG_JSON_ENV_VAR``)."""
    import json

    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return dict((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError):
        return {}


def system_config(cfg: RayConfig) -> dict[str, Any]:
    """Ray's ``_system_config`` of a local cluster started with ``cfg`` (only what differs from
    Ray's defaults)."""
    system: dict[str, Any] = {}
    if cfg.inline_object_kb is not None:
        system["max_direct_call_object_size"] = cfg.inline_object_kb * 1024
    if not cfg.metrics:
        system["enable_metrics_collection"] = False
    return system


def init_ray(cfg: RayConfig) -> bool:
    """Connect to / start Ray unless already initialised; True if this call started it."""
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = cfg.progress_bars
    if ray.is_initialized():
        return False
    # Inside a Ray job, variables the job's runtime env already sets reach every worker; naming
    # them again in ray.init is a merge conflict Ray refuses.
    in_job = job_env_vars()
    runtime_env = {"env_vars": {k: v for k, v in worker_env().items() if k not in in_job}}
    address = os.environ.get("RAY_ADDRESS") or cfg.address
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        dashboard = {}
        if cfg.include_dashboard:
            port = cfg.dashboard_port or free_port()
            dashboard = {"dashboard_host": "127.0.0.1", "dashboard_port": port}
            # State API calls inside workers (Ray Train's placement-group cleaner) find this
            # cluster's dashboard by RAY_ADDRESS; without it they fail wherever another Ray
            # instance runs on the machine ("Found multiple active Ray instances")
            runtime_env["env_vars"]["RAY_ADDRESS"] = f"http://127.0.0.1:{port}"
        else:
            runtime_env["worker_process_setup_hook"] = f"{__name__}.quiet_state_api_warnings"
        system = system_config(cfg)
        ray.init(
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus,
            include_dashboard=cfg.include_dashboard,
            runtime_env=runtime_env,
            _system_config=system or None,
            **dashboard,
        )
    # DataContext is per driver process; set again in case ray.init replaced it.
    ray.data.DataContext.get_current().enable_progress_bars = cfg.progress_bars
    return True


def shutdown_if_started(started: bool) -> None:
    """Shut Ray down if :func:`init_ray` started it (leave a caller's session alone)."""
    if started:
        import ray

        ray.shutdown()


def work_items() -> dict[str, tuple[str, str]]:
    """This job's actors and tasks so far, by id: (class or function name, node id). Read from
    Ray's State API (served by the dashboard); {} where it is not available (a local cluster
    without the dashboard), since this only feeds summaries."""
    import ray

    if not ray.is_initialized():  # (get_runtime_context would start a local Ray)
        return {}
    try:
        from ray.util.state import list_actors, list_tasks

        job = ray.get_runtime_context().get_job_id()
        items = {a.actor_id: (a.class_name, a.node_id or "")
                 for a in list_actors(filters=[("job_id", "=", job)], limit=10_000,
                                      raise_on_missing_output=False)}
        for t in list_tasks(filters=[("job_id", "=", job), ("type", "=", "NORMAL_TASK")],
                            limit=10_000, raise_on_missing_output=False):
            items[t.task_id] = (t.func_or_class_name, t.node_id or "")
        return items
    except Exception:  # noqa: BLE001 - no State API: the summary simply has no node table
        return {}


def work_by_node(items: dict[str, tuple[str, str]], before: dict[str, tuple[str, str]] | None = None
                 ) -> dict[str, dict[str, int]]:
    """``{node id: {actor class / task function: count}}`` of the items not in ``before``."""
    out: dict[str, dict[str, int]] = {}
    for key, (name, node) in items.items():
        if before and key in before:
            continue
        per_node = out.setdefault(node or "unknown", {})
        per_node[name] = per_node.get(name, 0) + 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}
