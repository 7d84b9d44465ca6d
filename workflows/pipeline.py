"""``python -m workflows.pipeline``: the main job as one Ray job on an existing cluster.

preprocess → fit → train → evaluate → register, every location a URI (a local folder or
``s3://``), one Ray connection for all stages (``RAY_ADDRESS``, which ``ray job submit`` sets;
a local cluster otherwise), every stage tracked in MLflow (``MLFLOW_TRACKING_URI``). Under
``--root``::

    store/    the preprocessed-clip store       fit/       morphable model, regions, motion
    train/    checkpoints (train/ray) + bundle  evaluate/  metrics tables and plots
    pipeline.json  each stage's summary, seconds, and the Ray nodes that did its work

The node table of a stage counts this job's actors (by class) and tasks (by function) per Ray
node id, from Ray's State API: on a cluster it shows the work landing on the worker nodes.
Submit it with ``infra/submit.sh pipeline --manifest s3://… --root s3://…`` or
``python -m workflows.platform.submit pipeline …``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from workflows.common import format_summary, load_config, user_errors
from workflows.platform import storage

STAGES = ("preprocess", "fit", "train", "evaluate", "register")
SUMMARY = "pipeline.json"


def locations(root: str) -> dict[str, str]:
    """Where each stage writes under ``root``."""
    return {name: storage.join(root, name) for name in ("store", "fit", "train", "evaluate")}


def _prepared_locations(root: str) -> dict[str, str]:
    """:func:`locations`, local ones absolute; the bucket of an S3 root made if missing, and the
    tracking server checked, before any stage starts."""
    from workflows.platform import tracking

    loc = locations(root)
    if not storage.is_s3(root):
        loc = {k: str(Path(v).expanduser().resolve()) for k, v in loc.items()}
    for uri in (root, *loc.values()):
        if storage.is_s3(uri):
            storage.ensure_bucket(uri)
            break
    tracking.check_server()
    return loc


class _Report:
    """``pipeline.json``: each stage's seconds, Ray nodes and summary, rewritten after each stage."""

    def __init__(self, manifest: str, root: str) -> None:
        self.root = root
        self.data: dict[str, Any] = {"manifest": manifest, "root": root, "stages": {}}

    def stage(self, name: str, fn, *args) -> Any:
        """Run one stage and record it."""
        from workflows.platform.raycluster import work_by_node, work_items

        typer.secho(f"\n▶ {name}", bold=True)
        before, tic = work_items(), time.perf_counter()
        result = fn(*args)
        seconds = time.perf_counter() - tic
        nodes = work_by_node(work_items(), before)
        self.data["stages"][name] = {"seconds": round(seconds, 1), "nodes": nodes,
                                     "summary": result if isinstance(result, dict) else {}}
        typer.echo(format_summary(f"{name}: work per Ray node", nodes or {"nodes": "unknown"}))
        typer.secho(f"✓ {name} ({seconds:.0f} s)", fg="green")
        self.write()
        return result

    def write(self) -> None:
        storage.write_text(storage.join(self.root, SUMMARY), json.dumps(self.data, indent=2, default=str))


def _ray_stages(report: _Report, ordered: list[str], manifest: str, loc: dict[str, str],
                overrides: dict[str, list[str]]) -> None:
    """preprocess, fit, train, evaluate (those of ``ordered``) on one Ray connection."""
    from workflows import evaluate, fit, preprocess, train
    from workflows.platform.raycluster import RayConfig, init_ray, shutdown_if_started
    from workflows.preprocess.worker import PreprocessConfig

    started = init_ray(RayConfig())
    try:
        if "preprocess" in ordered:
            report.stage("preprocess", preprocess.run, manifest, loc["store"],
                         load_config(PreprocessConfig, "preprocess", None, overrides.get("preprocess", [])))
        if "fit" in ordered:
            report.stage("fit", fit.run, loc["store"], loc["fit"],
                         load_config(fit.FitConfig, "fit", None, overrides.get("fit", [])))
        if "train" in ordered:
            report.stage("train", train.run, loc["store"], loc["fit"], loc["train"],
                         train.load_stage_config(None, overrides.get("train", [])))
        if "evaluate" in ordered:
            report.stage("evaluate", evaluate.run,
                         load_config(evaluate.EvaluateConfig, "evaluate", None, overrides.get("evaluate", [])),
                         _bundle(loc), loc["store"], loc["evaluate"], None)
    finally:
        shutdown_if_started(started)


def _bundle(loc: dict[str, str]) -> str:
    return storage.join(loc["train"], "bundle")


def _register(report: _Report, loc: dict[str, str], metric: str) -> None:
    """Register the bundle with evaluate's metrics ({} when there are none)."""
    from workflows import register

    metrics_uri = storage.join(loc["evaluate"], "metrics.json")
    metrics = json.loads(storage.read_text(metrics_uri)) if storage.exists(metrics_uri) else {}
    report.stage("register", lambda: register.register(_bundle(loc), metrics, metric=metric, mode="min"))


def run(manifest: str, root: str, stages: tuple[str, ...] = STAGES,
        overrides: dict[str, list[str]] | None = None, metric: str = "test/lmd") -> dict[str, Any]:
    """Run ``stages`` (in pipeline order) on ``manifest`` with outputs under ``root``."""
    from workflows.platform import tracking

    unknown = set(stages) - set(STAGES)
    if unknown:
        raise typer.BadParameter(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")
    loc = _prepared_locations(root)
    report = _Report(manifest, root)
    ordered = [s for s in STAGES if s in stages]
    _ray_stages(report, ordered, manifest, loc, overrides or {})
    if "register" in ordered:
        _register(report, loc, metric)
    report.data["bundle"] = _bundle(loc)
    report.data["tracking_uri"] = tracking.tracking_uri()
    report.write()
    return report.data


@user_errors("pipeline")
def cli(
    manifest: str = typer.Option(..., help="manifest.jsonl: local path or s3:// URI"),
    root: str = typer.Option(..., help="output root: local folder or s3:// prefix"),
    stages: str = typer.Option(",".join(STAGES), help="comma-separated stages to run, in order"),
    set_preprocess: list[str] = typer.Option([], "--set-preprocess", help="preprocess --set"),
    set_fit: list[str] = typer.Option([], "--set-fit", help="fit --set"),
    set_train: list[str] = typer.Option([], "--set-train", help="train --set"),
    set_evaluate: list[str] = typer.Option([], "--set-evaluate", help="evaluate --set"),
    metric: str = typer.Option("test/lmd", help="metric that decides the registry's champion"),
) -> None:
    """Run the whole pipeline (or some stages) with data and outputs at URIs, as one Ray job."""
    overrides = {"preprocess": set_preprocess, "fit": set_fit, "train": set_train,
                 "evaluate": set_evaluate}
    report = run(manifest, root, tuple(s.strip() for s in stages.split(",") if s.strip()),
                 overrides, metric)
    typer.echo(format_summary("pipeline", {
        name: {"seconds": s["seconds"], "nodes": len(s["nodes"])} for name, s in report["stages"].items()}))
    typer.echo(f"  report: {storage.join(root, SUMMARY)}")


if __name__ == "__main__":  # Ray job entrypoint: python -m workflows.pipeline ...
    typer.run(cli)
