"""Job submission pieces that need no cluster: entrypoints, runtime envs, env merging, node tables."""

from __future__ import annotations

import json


def test_entrypoint_runs_a_stage_module_with_quoted_args():
    from workflows.platform.submit import entrypoint

    assert entrypoint("pipeline", ["--root", "s3://b/a run"]) == "python -m workflows.pipeline --root 's3://b/a run'"
    assert entrypoint("tune-sampler", []) == "python -m workflows.tune_sampler"
    assert entrypoint("tune.sweep", ["--out", "s3://b/s"]) == "python -m tune.sweep --out s3://b/s"


def test_runtime_env_ships_the_tree_and_the_storage_env(monkeypatch):
    from workflows.platform.submit import ROOT, runtime_env

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    env = runtime_env({"EXTRA": "1"})
    assert env["working_dir"] == str(ROOT) and (ROOT / "workflows" / "pipeline.py").exists()
    assert {".venv", "workspace", ".git"} <= set(env["excludes"])
    assert env["env_vars"]["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9"
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
    assert env["env_vars"]["EXTRA"] == "1" and "AWS_SESSION_TOKEN" not in env["env_vars"]


def test_ray_init_in_a_job_does_not_repeat_the_jobs_env_vars(monkeypatch):
    from workflows.platform.raycluster import job_env_vars

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert job_env_vars() == {}
    config = {"runtime_env": {"env_vars": {"AWS_ENDPOINT_URL": "http://s3"}, "working_dir": "x"}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(config))
    assert job_env_vars() == {"AWS_ENDPOINT_URL": "http://s3"}


def test_work_by_node_counts_only_new_work():
    from workflows.platform.raycluster import work_by_node

    before = {"a1": ("MapWorker(X)", "n1")}
    after = {**before, "a2": ("MapWorker(X)", "n2"), "t1": ("_task", "n2"), "t2": ("_task", "n1"),
             "t3": ("_task", "n2")}
    assert work_by_node(after, before) == {"n1": {"_task": 1}, "n2": {"MapWorker(X)": 1, "_task": 2}}


def test_submit_command_passes_the_stage_options_through(monkeypatch):
    """As a subcommand of a bigger app too (``disenttalk submit``): the stage's own options are
    handed to the job untouched."""
    import typer
    from typer.testing import CliRunner

    from workflows.platform import submit

    app = typer.Typer()
    app.command("submit", context_settings=submit.CONTEXT)(submit.cli)
    app.command("other")(lambda: None)
    seen = {}

    def fake_submit(stage, args, address, extra, submission_id):
        seen.update(stage=stage, args=args, address=address, extra=extra)
        return None, "raysubmit_x"

    monkeypatch.setattr(submit, "submit", fake_submit)
    result = CliRunner().invoke(app, ["submit", "pipeline", "--address", "http://h:8265", "--env", "A=1",
                                      "--no-wait", "--manifest", "s3://b/m", "--set-train", "x=1"])
    assert result.exit_code == 0, result.output
    assert seen == {"stage": "pipeline", "args": ["--manifest", "s3://b/m", "--set-train", "x=1"],
                    "address": "http://h:8265", "extra": {"A": "1"}}
    assert "raysubmit_x" in result.output
