#!/usr/bin/env python
"""A multi-node Ray cluster on this machine, with S3 and an MLflow server, for development and tests.

    python infra/local-cluster.py up --dir DIR      # head + 2 worker nodes, moto S3, mlflow server
    eval "$(python infra/local-cluster.py env --dir DIR)"
    python infra/local-cluster.py status --dir DIR
    python infra/local-cluster.py kill-node worker-1 --dir DIR   # lose a node (raylet SIGKILL)
    python infra/local-cluster.py start-node worker-1 --dir DIR  # capacity back
    python infra/local-cluster.py down --dir DIR

Everything binds 127.0.0.1 on free ports. Each Ray node is its own ``ray start --block`` (its own
raylet, resources and temp dir) started in a new session, so its process group holds exactly the
processes of that node; ``down`` signals those groups and the S3 / MLflow servers' groups, by id,
and nothing else (no ``ray stop``, no killing by name: other clusters on the machine are left
alone). Ray 2.60 token authentication: a token is generated with ``ray get-auth-token --generate``
into ``DIR/.ray/auth_token`` (never ``~/.ray``) and given to every node and client through
``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH``/``RAY_AUTH_TOKEN``.

State (pids, process groups, ports, addresses, token path) is in ``DIR/cluster.json``; the env
to use is in ``DIR/env.sh`` and printed by ``up`` / ``env``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# The process helpers live beside this script (infra/process_groups.py); it is run by path, not
# imported as a package, so its own folder is where they are found.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from process_groups import (  # noqa: E402
    alive,
    comm,
    free_port,
    group_pids,
    http_ok,
    listening,
    pids_naming,
    spawn,
    stop_groups,
    wait_until,
)

STATE = "cluster.json"
ENV_FILE = "env.sh"
BIN = Path(sys.executable).parent  # ray, moto_server, mlflow of this interpreter's environment
DUMMY_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
              "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


def _base_env() -> dict[str, str]:
    """This environment without another cluster's Ray / auth settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # job entrypoints run `python`: this interpreter's environment first
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def generate_token(folder: Path) -> Path:
    """``ray get-auth-token --generate`` with HOME pointed at ``folder``: the token file is
    ``folder/.ray/auth_token``, never the user's ``~/.ray``."""
    env = {**_base_env(), "HOME": str(folder)}
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = folder / ".ray" / "auth_token"
    path.chmod(0o600)
    return path


def cluster_env(state: dict) -> dict[str, str]:
    """The environment a client (``ray job submit``, a driver, boto3, mlflow) uses."""
    token = Path(state["token_path"]).read_text().strip()
    return {
        "RAY_ADDRESS": state["dashboard_url"],
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": state["token_path"],
        "RAY_AUTH_TOKEN": token,
        "MLFLOW_TRACKING_URI": state["mlflow_url"],
        "AWS_ENDPOINT_URL": state["s3_url"],
        "MLFLOW_S3_ENDPOINT_URL": state["s3_url"],
        **DUMMY_KEYS,
        "DISENTTALK_BUCKET": state["bucket"],
    }


def _node_env(state: dict) -> dict[str, str]:
    env = _base_env()
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": state["token_path"],
                # Processes on the nodes that look Ray up without an address (Ray Train's
                # placement-group cleaner asks the State API) find this cluster, not whichever
                # other Ray instance runs on the machine.
                "RAY_ADDRESS": state["gcs_address"]})
    return env


def _ray_start_cmd(state: dict, node: dict) -> list[str]:
    """``ray start --block`` for one node; ports all fixed (free ones picked at ``up``)."""
    p = node["ports"]
    cmd = [str(BIN / "ray"), "start", "--block", "--disable-usage-stats",
           "--node-ip-address", "127.0.0.1", "--temp-dir", node["temp_dir"],
           "--num-cpus", str(node["num_cpus"]), "--resources", json.dumps(node["resources"]),
           "--object-store-memory", str(state["object_store_bytes"]),
           "--node-manager-port", str(p["node_manager"]), "--object-manager-port", str(p["object_manager"]),
           "--dashboard-agent-listen-port", str(p["agent_listen"]),
           "--dashboard-agent-grpc-port", str(p["agent_grpc"]),
           "--runtime-env-agent-port", str(p["runtime_env_agent"]),
           "--metrics-export-port", str(p["metrics"])]
    if node["head"]:
        cmd += ["--head", "--port", str(state["gcs_port"]), "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(state["dashboard_port"]), "--include-dashboard", "true",
                "--ray-client-server-port", str(p["client"])]
    else:
        cmd += ["--address", state["gcs_address"]]
    return cmd


def _node_ports(head: bool) -> dict[str, int]:
    names = ["node_manager", "object_manager", "agent_listen", "agent_grpc", "runtime_env_agent",
             "metrics"] + (["client"] if head else [])
    return {n: free_port() for n in names}


def _get_json(url: str, token: str | None = None, timeout: float = 5.0):
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def alive_nodes(state: dict) -> list[dict]:
    """The cluster's alive nodes as the dashboard's State API lists them."""
    token = Path(state["token_path"]).read_text().strip()
    data = _get_json(f"{state['dashboard_url']}/api/v0/nodes?limit=100", token)
    nodes = data["data"]["result"]["result"]
    return [n for n in nodes if n.get("state") == "ALIVE"]


def save(folder: Path, state: dict) -> None:
    tmp = folder / (STATE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, folder / STATE)
    env = cluster_env(state)
    (folder / ENV_FILE).write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()))


def load(folder: Path) -> dict:
    path = folder / STATE
    if not path.exists():
        raise SystemExit(f"no cluster state at {path} (run `up` first)")
    return json.loads(path.read_text())


def start_node(folder: Path, state: dict, name: str, timeout: float = 120.0, attempts: int = 3) -> dict:
    """(Re)start the Ray node ``name`` of ``state`` and wait until the cluster lists it alive."""
    node = state["nodes"][name]
    # Each node its own temp dir: nodes sharing one would share (and race on) the session's
    # runtime_resources, where every node unpacks a job's working_dir.
    node.setdefault("temp_dir", os.path.join(state["ray_temp_dir"], name))
    if node.get("pid") and alive(node["pid"]):
        raise SystemExit(f"{name} is already running (pid {node['pid']})")
    before = set() if node["head"] else set(_named_nodes(state, name))
    for attempt in range(1, attempts + 1):
        if not node["head"]:  # fresh ports: the killed raylet's may linger in TIME_WAIT
            node["ports"] = _node_ports(False)
        entry = spawn(name, _ray_start_cmd(state, node), _node_env(state), folder / "logs")
        node.update({k: entry[k] for k in ("pid", "pgid", "cmd", "log")})
        save(folder, state)
        # ready: a node carrying this node's resource name that was not there before (a killed
        # node of the same name may still be listed alive until the GCS notices it is gone)
        try:
            wait_until(f"Ray node {name}", lambda: bool(set(_named_nodes(state, name)) - before),
                       timeout, [entry])
            break
        except RuntimeError:
            # `ray start` gave up (on a machine starved of CPU a raylet can miss its
            # registration deadline): clear what it left and start the node again
            stop_groups([entry], grace=2.0)
            if attempt == attempts or node["head"]:
                raise
            print(f"{name}: ray start exited (attempt {attempt}); starting it again", file=sys.stderr)
    node["node_id"] = sorted(set(_named_nodes(state, name)) - before)[0]
    save(folder, state)
    return node


def _named_nodes(state: dict, name: str) -> list[str]:
    """Ids of the alive Ray nodes that carry the custom resource ``name``."""
    try:
        return [n["node_id"] for n in alive_nodes(state) if name in n.get("resources_total", {})]
    except (OSError, urllib.error.URLError, KeyError, ValueError):
        return []


def up(folder: Path, workers: int, worker_cpus: int, head_cpus: int, bucket: str,
       object_store_mb: int, timeout: float) -> dict:
    """Start S3, MLflow, the Ray head and ``workers`` worker nodes; write the state file."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / STATE).exists() and any(alive(p["pid"]) for p in _processes(load(folder))):
        raise SystemExit(f"a cluster from {folder / STATE} is still running; `down` it first")
    (folder / "logs").mkdir(exist_ok=True)
    # moto keeps the bucket in memory: a new cluster is a new one, registry included (runs whose
    # artefacts are gone would otherwise linger in MLflow's database)
    (folder / "mlflow.db").unlink(missing_ok=True)
    # Unix socket paths are limited to ~107 bytes: Ray's session folders get a short path.
    ray_tmp = tempfile.mkdtemp(prefix="dtray-", dir="/tmp")
    s3_port, mlflow_port, gcs_port, dash_port = (free_port() for _ in range(4))
    state: dict = {
        "dir": str(folder.resolve()), "bucket": bucket, "ray_temp_dir": ray_tmp,
        "token_path": str(generate_token(folder.resolve())),
        "s3_url": f"http://127.0.0.1:{s3_port}", "mlflow_url": f"http://127.0.0.1:{mlflow_port}",
        "gcs_port": gcs_port, "gcs_address": f"127.0.0.1:{gcs_port}", "dashboard_port": dash_port,
        "dashboard_url": f"http://127.0.0.1:{dash_port}",
        "object_store_bytes": object_store_mb << 20, "services": {}, "nodes": {},
    }
    state["nodes"]["head"] = {"head": True, "num_cpus": head_cpus,
                              "resources": {"head": 1}, "ports": _node_ports(True)}
    for i in range(1, workers + 1):
        state["nodes"][f"worker-{i}"] = {"head": False, "num_cpus": worker_cpus,
                                         "resources": {f"worker-{i}": 1},
                                         "ports": _node_ports(False)}
    save(folder, state)
    try:
        logs = folder / "logs"
        env = {**_base_env(), **DUMMY_KEYS}
        s3 = spawn("s3", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], env, logs)
        state["services"]["s3"] = s3
        save(folder, state)
        wait_until("moto S3", lambda: listening(s3_port), timeout, [s3])
        _create_bucket(state["s3_url"], bucket)
        menv = {**env, "MLFLOW_S3_ENDPOINT_URL": state["s3_url"], "AWS_ENDPOINT_URL": state["s3_url"]}
        ml = spawn("mlflow", [
            str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
            "--workers", "1", "--backend-store-uri", f"sqlite:///{folder.resolve() / 'mlflow.db'}",
            "--artifacts-destination", f"s3://{bucket}/mlflow"], menv, logs)
        state["services"]["mlflow"] = ml
        save(folder, state)
        start_node(folder, state, "head", timeout)
        for i in range(1, workers + 1):
            start_node(folder, state, f"worker-{i}", timeout)
        wait_until("MLflow server", lambda: http_ok(state["mlflow_url"] + "/health"), timeout, [ml])
    except BaseException:
        down(folder)
        raise
    return state


def _create_bucket(endpoint: str, bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
        client.create_bucket(Bucket=bucket)


def _processes(state: dict) -> list[dict]:
    """Every process group ``up`` started that is recorded in the state (nodes, then services)."""
    found = [n for n in state["nodes"].values() if n.get("pid")]
    return found[::-1] + list(state["services"].values())


def down(folder: Path) -> None:
    """Stop exactly what ``up`` started (by process group id) and remove Ray's temp folder."""
    import shutil

    state = load(folder)
    stop_groups(_processes(state))
    # Ray workers a raylet forked may have left its group; they carry the session dir in their
    # command line. Only processes whose command line names this cluster's own temp dir go.
    for pid in pids_naming(state["ray_temp_dir"]):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(state["ray_temp_dir"], ignore_errors=True)
    for node in state["nodes"].values():
        node.pop("pid", None)
    state["services"] = {}
    save(folder, state)


def kill_node(folder: Path, name: str) -> int:
    """SIGKILL the raylet of node ``name`` (as a lost machine would); its ``ray start --block``
    then takes the rest of the node down. Returns the raylet's pid."""
    state = load(folder)
    node = state["nodes"][name]
    raylets = [p for p in group_pids(node["pgid"]) if comm(p) == "raylet"]
    if not raylets:
        raise SystemExit(f"{name}: no raylet running")
    for pid in raylets:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and alive(node["pid"]):
        time.sleep(0.2)
    stop_groups([node], grace=2.0)  # whatever the node left behind
    node.pop("pid", None)
    save(folder, state)
    return raylets[0]


def status(folder: Path) -> dict:
    """What runs: each process's liveness and the nodes the cluster reports alive."""
    state = load(folder)
    out = {"processes": {p["name"]: {"pid": p["pid"], "alive": alive(p["pid"])}
                         for p in (*[{"name": k, **v} for k, v in state["nodes"].items() if v.get("pid")],
                                   *state["services"].values())}}
    try:
        out["ray_nodes"] = [{"node_id": n["node_id"], "resources": n.get("resources_total", {})}
                            for n in alive_nodes(state)]
    except (OSError, urllib.error.URLError, KeyError, ValueError) as exc:
        out["ray_nodes"] = f"unreachable: {exc}"
    out["mlflow"] = http_ok(state["mlflow_url"] + "/health") if state["services"] else False
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status", "env", "kill-node", "start-node"):
        p = sub.add_parser(name)
        p.add_argument("--dir", type=Path, default=Path("workspace/cluster"),
                       help="folder for the state file, logs, the token and MLflow's database")
        if name in ("kill-node", "start-node"):
            p.add_argument("node", help="node name, e.g. worker-1")
        if name == "up":
            p.add_argument("--workers", type=int, default=2)
            p.add_argument("--worker-cpus", type=int, default=1)
            p.add_argument("--head-cpus", type=int, default=0)
            p.add_argument("--bucket", default="disenttalk")
            p.add_argument("--object-store-mb", type=int, default=256)
            p.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args(argv)
    if args.command == "up":
        state = up(args.dir, args.workers, args.worker_cpus, args.head_cpus, args.bucket,
                   args.object_store_mb, args.timeout)
        print(f"# cluster up: {len(state['nodes'])} Ray nodes, S3 {state['s3_url']} "
              f"(bucket {state['bucket']}), MLflow {state['mlflow_url']}", file=sys.stderr)
        print(f"# state: {args.dir / STATE}; stop with: {sys.argv[0]} down --dir {args.dir}",
              file=sys.stderr)
        print((args.dir / ENV_FILE).read_text(), end="")
    elif args.command == "down":
        down(args.dir)
    elif args.command == "status":
        print(json.dumps(status(args.dir), indent=2))
    elif args.command == "env":
        print((args.dir / ENV_FILE).read_text(), end="")
    elif args.command == "kill-node":
        print(kill_node(args.dir, args.node))
    elif args.command == "start-node":
        state = load(args.dir)
        print(start_node(args.dir, state, args.node)["pid"])


if __name__ == "__main__":
    main()
