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
