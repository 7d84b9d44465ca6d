"""Send a stage, or the whole pipeline, to a Ray cluster as a Ray job.

    python -m workflows.platform.submit pipeline --manifest s3://b/corpus/manifest.jsonl --root s3://b/run
    python -m workflows.platform.submit preprocess --manifest s3://… --out s3://b/store
    python -m workflows.platform.submit tune.sweep …        # any module: python -m <module> …

The entrypoint is ``python -m workflows.<stage> ARGS`` (or ``python -m <module>`` for a dotted
name). The job's runtime env ships this working tree (``working_dir``, without ``.venv``,
``workspace``, ``.git``, caches) and the variables that locate storage and tracking
(:data:`workflows.platform.raycluster.FORWARDED_ENV`: ``AWS_*``, ``MLFLOW_TRACKING_URI``, …).
The cluster is ``--address`` or ``RAY_ADDRESS`` (the dashboard URL, ``http://head:8265``);
with Ray 2.60 token authentication the client reads ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` from the environment, as ``ray job submit`` does.
Unless ``--no-wait``, it follows the job's logs and exits with 0 only if the job succeeded.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[2]
EXCLUDES = [".venv", "workspace", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache",
            ".ruff_cache", "tests"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def entrypoint(stage: str, args: list[str]) -> str:
    """The shell command the job runs: ``python -m workflows.<stage> args``."""
    import shlex

    module = stage if "." in stage else f"workflows.{stage.replace('-', '_')}"
    return " ".join(["python", "-m", module, *map(shlex.quote, args)])


def runtime_env(extra_env: dict[str, str] | None = None, working_dir: str | Path = ROOT) -> dict[str, Any]:
    """Working tree + forwarded environment (+ ``extra_env``) as a job runtime env."""
    from workflows.platform.raycluster import forwarded_env

    env = {**forwarded_env(), **(extra_env or {})}
    env.setdefault("HF_HUB_OFFLINE", "1")
    return {"working_dir": str(working_dir), "excludes": list(EXCLUDES), "env_vars": env}


def submit(stage: str, args: list[str], address: str | None = None,
           extra_env: dict[str, str] | None = None, submission_id: str | None = None,
           entrypoint_resources: dict[str, float] | None = None) -> tuple[Any, str]:
    """Submit the job; returns (client, submission id)."""
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise typer.BadParameter("no cluster: pass --address or set RAY_ADDRESS (http://head:8265)")
    client = JobSubmissionClient(address)
    job_id = client.submit_job(entrypoint=entrypoint(stage, args), runtime_env=runtime_env(extra_env),
                               submission_id=submission_id, entrypoint_resources=entrypoint_resources)
    return client, job_id


def follow(client: Any, job_id: str, timeout: float | None = None, echo=print, poll: float = 2.0) -> str:
    """Print the job's new log lines until it ends; returns its final status name."""
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = 0
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            echo(logs[shown:].rstrip("\n"))
            shown = len(logs)
        name = getattr(status, "value", str(status))
        if name in TERMINAL:
            return name
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {name} after {timeout:.0f} s")
        time.sleep(poll)


def cli(
    ctx: typer.Context,
    stage: str = typer.Argument(..., help="stage (preprocess, fit, train, evaluate, register, "
                                          "pipeline, quickstart, …) or a dotted module (tune.sweep)"),
    address: str | None = typer.Option(None, help="dashboard URL (default: RAY_ADDRESS)"),
    env: list[str] = typer.Option([], "--env", help="extra job env var, KEY=VALUE"),
    wait: bool = typer.Option(True, help="follow the logs and exit with the job's outcome"),
    submission_id: str | None = typer.Option(None, help="job id to use (default: Ray picks one)"),
) -> None:
    """Submit a stage (its own options follow) to a Ray cluster as a Ray job."""
    extra = dict(item.split("=", 1) for item in env)
    client, job_id = submit(stage, list(ctx.args), address, extra, submission_id)
    typer.echo(f"submitted {job_id}: {entrypoint(stage, list(ctx.args))}", err=True)
    if not wait:
        typer.echo(job_id)
        return
    status = follow(client, job_id, echo=typer.echo)
    typer.echo(f"job {job_id}: {status}", err=True)
    raise typer.Exit(0 if status == "SUCCEEDED" else 1)


CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}


def main() -> None:
    """``python -m workflows.platform.submit``."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command(context_settings=CONTEXT)(cli)
    app(sys.argv[1:])


if __name__ == "__main__":
    main()
