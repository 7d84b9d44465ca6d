"""The pipeline as a user with a cluster runs it: a 3-node Ray cluster with token auth (head + two
worker nodes, ``infra/local-cluster.py``), moto S3 and an MLflow server, jobs sent with
``workflows.platform.submit``; then a worker node lost mid-training and mid-preprocess.

Every client step runs in a subprocess with the cluster's env, as a user's shell would; this
process only reads S3 and the MLflow server. Everything is stopped by process group at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "local-cluster.py"
BUCKET = "disenttalk"
TRAIN_NAME = "cluster-train"

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

TINY_TRAIN = [
    "train.window=16", "train.batch_size=4", "train.max_prefix=4", "run.val_batches=1",
    "run.max_failures=2", "scaling.num_workers=2", "scaling.cpus_per_worker=1.0",
    "model.denoiser.dim=16", "model.denoiser.num_blocks=2", "model.denoiser.heads=2",
    "model.diffusion.num_timesteps=50", "model.sync.embed_dim=8", "model.sync.hidden=16",
    "model.sync.windows_per_clip=2", "model.sync.neg_min_shift=2", "model.sync.neg_max_shift=4",
    "ray.progress_bars=false", "mlflow.experiment=cluster-train",
]
QUIET = ["ray.progress_bars=false"]


def cluster_cmd(folder: Path, *args: str, env: dict | None = None, check: bool = True) -> str:
    out = subprocess.run([sys.executable, str(SCRIPT), *args, "--dir", str(folder)], env=env,
                         capture_output=True, text=True, timeout=300)
    if check and out.returncode:
        raise RuntimeError(f"local-cluster {args}: {out.stderr[-3000:]}")
    return out.stdout


def parse_env(text: str) -> dict[str, str]:
    import shlex

    env = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The local cluster; its env applied to os.environ for this module (restored after)."""
    folder = tmp_path_factory.mktemp("cluster")
    tic = time.perf_counter()
    try:
        env = parse_env(cluster_cmd(folder, "up", "--bucket", BUCKET))
    except BaseException:
        cluster_cmd(folder, "down", check=False)
        raise
    state = json.loads((folder / "cluster.json").read_text())
    client_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    # this process reads S3 / MLflow only: no Ray auth settings leak into other tests' Ray
    mine = {k: v for k, v in env.items() if not k.startswith("RAY_")}
    saved = {k: os.environ.get(k) for k in mine}
    os.environ.update(mine)
    try:
        yield {"dir": folder, "state": state, "env": client_env, "up_seconds": time.perf_counter() - tic}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        cluster_cmd(folder, "down", check=False)
        assert not _pids_naming(state["ray_temp_dir"]), "processes of the cluster outlived `down`"


def _pids_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def submit(cluster, stage: str, *args: str) -> subprocess.Popen:
    """``python -m workflows.platform.submit STAGE ARGS`` in the background, logs to a file."""
    path = cluster["dir"] / f"job-{stage}-{time.monotonic_ns()}.log"
    with open(path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "workflows.platform.submit", stage, *args],
                                cwd=ROOT, env=cluster["env"], stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = path
    return proc


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    rc = proc.wait(timeout=timeout)
    text = proc.log_path.read_text()
    assert rc == 0, f"job failed (rc {rc}):\n{text[-6000:]}"
    assert "SUCCEEDED" in text.splitlines()[-1]
    return text


def node_names(cluster) -> dict[str, str]:
    """Ray node id → the cluster's node name (head, worker-1, …), killed-and-restarted ones too."""
    state = json.loads((cluster["dir"] / "cluster.json").read_text())
    return {n["node_id"]: name for name, n in state["nodes"].items() if n.get("node_id")}


def overrides(flag: str, items: list[str]) -> list[str]:
    return [arg for item in items for arg in (flag, item)]


@pytest.fixture(scope="module")
def corpus_uri(cluster, tmp_path_factory, astronaut):
    from tests.cluster.corpus import write_corpus
    from workflows.platform import storage

    local = write_corpus(tmp_path_factory.mktemp("corpus"), astronaut, {"train": 4, "val": 1}, bad=True)
    storage.upload_dir(local, f"s3://{BUCKET}/corpus")
    return f"s3://{BUCKET}/corpus/manifest.jsonl"


@pytest.fixture(scope="module")
def pipeline_run(cluster, corpus_uri):
    """The whole pipeline (preprocess → fit → train → register) as one Ray job."""
    from workflows.platform import storage

    root = f"s3://{BUCKET}/run"
    names = node_names(cluster)  # before the node ids of restarted nodes join
    tic = time.perf_counter()
    log = finish(submit(
        cluster, "pipeline", "--manifest", corpus_uri, "--root", root,
        "--stages", "preprocess,fit,train,register",
        *overrides("--set-preprocess", [*QUIET, "actors.min_size=2", "actors.max_size=2"]),
        *overrides("--set-fit", ["n_expression=12", "k_lip=4", "k_eye=3"]),
        *overrides("--set-train", [*TINY_TRAIN, "train.sync_steps=4", "train.denoiser_steps=4",
                                   "run.checkpoint_every=2"])))
    report = json.loads(storage.read_text(f"{root}/pipeline.json"))
    return {"root": root, "report": report, "log": log, "names": names,
            "seconds": time.perf_counter() - tic}


def test_pipeline_job_runs_on_both_worker_nodes(pipeline_run):
    report, names = pipeline_run["report"], pipeline_run["names"]
    stages = report["stages"]
    assert list(stages) == ["preprocess", "fit", "train", "register"]

    def workers_running(stage: str, cls: str) -> set[str]:
        return {names.get(node, node) for node, work in stages[stage]["nodes"].items()
                if any(cls in name for name in work)}

    assert workers_running("preprocess", "ClipProcessor") == {"worker-1", "worker-2"}
    assert workers_running("train", "RayTrainWorker") == {"worker-1", "worker-2"}
    # the preprocess summary's own per-node count names the same two nodes
    assert {names[n] for n in stages["preprocess"]["summary"]["nodes"]} == {"worker-1", "worker-2"}
    summary = stages["preprocess"]["summary"]
    assert (summary["ok"], summary["rejected"]) == (5, 1)


def test_store_fit_and_bundle_are_in_the_bucket(pipeline_run):
    from workflows.platform import clipstore, storage

    root = pipeline_run["root"]
    index = clipstore.read_index(f"{root}/store")
    assert sorted(r["clip_id"] for r in index) == ["train_00", "train_01", "train_02", "train_03", "val_04"]
    assert all(storage.exists(f"{root}/store/{r['record']}") for r in index)
    assert storage.exists(f"{root}/fit/morphable.npz") and storage.exists(f"{root}/fit/regions.json")
    bundle = storage.list_files(f"{root}/train/bundle")
    assert any(f.endswith("denoiser.pt") for f in bundle) and any(f.endswith("config.json") for f in bundle)
    assert storage.list_files(f"{root}/train/ray/disenttalk-train", suffix="state.pt")


def test_model_version_is_in_the_mlflow_server_with_artifacts_in_s3(cluster, pipeline_run):
    from mlflow import MlflowClient

    from workflows.platform import storage

    client = MlflowClient(cluster["state"]["mlflow_url"])
    version = client.get_model_version_by_alias("disenttalk", "champion")
    assert version.tags["source_bundle"] == f"{pipeline_run['root']}/train/bundle"
    # the server proxies artefacts to s3://<bucket>/mlflow: the registered bundle is there
    stored = storage.list_files(f"s3://{BUCKET}/mlflow")
    assert any(f.endswith("/denoiser.pt") for f in stored), stored[:20]
    assert any(f.endswith("/MLmodel") for f in stored)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {r.data.tags.get("stage") for r in runs} >= {"preprocess", "fit"}


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the job ended before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_training_survives_a_lost_worker_node(cluster, pipeline_run):
    """A worker node's raylet is SIGKILLed after the first checkpoint; the node comes back and
    the job finishes from that checkpoint."""
    from workflows.platform import storage

    root, out = pipeline_run["root"], f"s3://{BUCKET}/ft-train"
    snapshot = f"{out}/ray/{TRAIN_NAME}/checkpoint_manager_snapshot.json"
    proc = submit(cluster, "train", "--data", f"{root}/store", "--fit", f"{root}/fit", "--out", out,
                  *overrides("--set", [*TINY_TRAIN, f"run.name={TRAIN_NAME}", "train.sync_steps=8",
                                       "train.denoiser_steps=8", "run.checkpoint_every=2"]))

    def committed() -> int:
        try:
            return len(json.loads(storage.read_text(snapshot))["checkpoint_results"])
        except (OSError, ValueError, KeyError):
            return 0

    _wait_for(lambda: committed() >= 1, 400, "the first checkpoint", proc)
    cluster_cmd(cluster["dir"], "kill-node", "worker-1")
    time.sleep(2.0)
    cluster_cmd(cluster["dir"], "start-node", "worker-1")  # capacity back
    log = finish(proc)
    resumed = [line.split()[-1] for line in log.splitlines() if line.strip().startswith("resumed_from_step")]
    assert resumed and int(resumed[-1]) >= 2, log[-4000:]
    assert any(f.endswith("denoiser.pt") for f in storage.list_files(f"{out}/bundle"))


def test_preprocess_survives_a_lost_worker_node(cluster, tmp_path_factory, astronaut):
    """A worker node is lost while preprocessing; the job completes and the store has every good
    clip exactly once (index rows and record files)."""
    from tests.cluster.corpus import write_corpus
    from workflows.platform import clipstore, storage

    local = write_corpus(tmp_path_factory.mktemp("corpus_ft"), astronaut, {"train": 10},
                         seconds=2.0, bad=True)
    storage.upload_dir(local, f"s3://{BUCKET}/corpus-ft")
    out = f"s3://{BUCKET}/ft-store"
    proc = submit(cluster, "preprocess", "--manifest", f"s3://{BUCKET}/corpus-ft/manifest.jsonl",
                  "--out", out, *overrides("--set", [*QUIET, "actors.min_size=2", "actors.max_size=2",
                                                      "mlflow.experiment=cluster-preprocess-ft"]))
    _wait_for(lambda: len(storage.list_files(f"{out}/clips", suffix=".npz")) >= 2, 400,
              "the first records", proc)
    cluster_cmd(cluster["dir"], "kill-node", "worker-2")
    at_kill = len(storage.list_files(f"{out}/clips", suffix=".npz"))
    assert at_kill < 10 and proc.poll() is None, "the node was lost after the work was done"
    time.sleep(2.0)
    cluster_cmd(cluster["dir"], "start-node", "worker-2")
    finish(proc)
    index = clipstore.read_index(out)
    ids = [r["clip_id"] for r in index]
    assert sorted(ids) == [f"train_{i:02d}" for i in range(10)]  # each good clip exactly once
    records = storage.list_files(f"{out}/clips", suffix=".npz")
    assert sorted(f"{out}/{r['record']}" for r in index) == records  # no stray or missing records
    assert [r["clip_id"] for r in clipstore.read_rejects(out)] == ["noface"]
