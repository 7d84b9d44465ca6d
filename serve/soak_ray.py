"""The soak's view of the server's Ray cluster: replica processes and their RSS, and chaos.

Replicas are found through Ray's State API (``list_actors``: pid per actor, needs the dashboard,
``disenttalk serve --set ray.include_dashboard=true``) or, without it, as the
``ray::ServeReplica:<app>:<deployment>`` processes of this machine. RSS is read from /proc, so
only replicas on this machine are measured. Chaos kills a replica actor by name
(``ray.kill``); Serve's controller starts a replacement.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

REPLICA_PREFIX = "SERVE_REPLICA::"


def use_token_auth() -> None:
    """A local cluster started by ``ray.init`` uses token authentication (the token in
    ``~/.ray/auth_token``), which Ray only uses towards an explicit address with
    ``RAY_AUTH_MODE=token``: set that when a token is there and the mode is not set. Ray reads
    the mode when it is imported, so call this before anything imports ray."""
    import os

    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or token_file.exists()):
        os.environ["RAY_AUTH_MODE"] = "token"


def connect(address: str) -> None:
    """Join the server's Ray cluster as a driver (no output from its workers here)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")


def state_api_up() -> bool:
    """Whether Ray's State API answers (the cluster runs its dashboard)."""
    try:
        from ray.util.state import list_actors

        list_actors(limit=1, timeout=5)
        return True
    except Exception:  # noqa: BLE001 - no dashboard on the cluster
        return False


def _label(name: str) -> str:
    """``SERVE_REPLICA::disenttalk#Animator#ab12cd`` → ``Animator#ab12cd``."""
    return name.removeprefix(REPLICA_PREFIX).split("#", 1)[-1]


def replica_pids(app: str, state_api: bool) -> dict[str, int]:
    """{replica label: pid} of the app's running replicas."""
    if state_api:
        try:
            from ray.util.state import list_actors

            actors = list_actors(filters=[("state", "=", "ALIVE")], limit=10_000, timeout=10,
                                 raise_on_missing_output=False)
            found = {_label(a.name): a.pid for a in actors
                     if (a.name or "").startswith(f"{REPLICA_PREFIX}{app}#") and a.pid}
            if found:
                return found
        except Exception:  # noqa: BLE001 - no dashboard: fall back to this machine's processes
            pass
    return local_replica_pids(app)


def local_replica_pids(app: str) -> dict[str, int]:
    """{``<deployment>@<pid>``: pid} of the ``ray::ServeReplica:<app>:...`` processes here."""
    marker = f"ray::ServeReplica:{app}:".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(marker):
                # the title names the method a busy replica runs: "Animator.handle_request_..."
                deployment = cmd[len(marker):].split(b"\0")[0].split(b" ")[0].split(b".")[0].decode(errors="replace")
                found[f"{deployment}@{entry.name}"] = int(entry.name)
    return found


def memory_bytes(pid: int) -> tuple[int, int] | None:
    """Resident memory of a process on this machine and the part of it that is shared memory
    (``RssShmem``: for a Ray worker, pages of the object store it has read objects from, which
    belong to the store and stay mapped); None: gone or elsewhere."""
    try:
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if ":" in line)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields.get("RssShmem", "0 kB").split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def kill_replica(app: str, deployment: str) -> str | None:
    """Kill one running replica of ``deployment`` (its actor, no restart: Serve replaces it);
    the label of the one killed, None when there was none."""
    import ray

    named = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a.get("namespace") == "serve" and a["name"].startswith(f"{REPLICA_PREFIX}{app}#{deployment}#")]
    if not named:
        return None
    victim = random.choice(named)
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    return _label(victim)


def rss_loop(soak: Any, app: str, state_api: bool, every_s: float = 10.0) -> None:
    """Sample every replica's RSS (and its shared part) into the tally every ``every_s``."""
    while True:
        for label, pid in replica_pids(app, state_api).items():
            if (memory := memory_bytes(pid)) is not None:
                soak.tally.rss(label, memory[0], shared=memory[1])
        if soak.stop.wait(every_s):
            return


def chaos_loop(soak: Any, app: str, first_s: float, every_s: float,
               targets: tuple[str, ...] = ("Animator", "Portraits")) -> None:
    """After ``first_s``, every ``every_s``: kill a replica of the next deployment in ``targets``."""
    k = 0
    if soak.stop.wait(first_s):
        return
    while True:
        deployment = targets[k % len(targets)]
        try:
            killed = kill_replica(app, deployment)
            soak.tally.event(f"chaos: killed {killed}" if killed else f"chaos: no {deployment} replica")
        except Exception as exc:  # noqa: BLE001 - reported; the soak goes on
            soak.tally.event(f"chaos: killing a {deployment} replica failed: {type(exc).__name__}: {exc}")
        k += 1
        if soak.stop.wait(every_s):
            return


def start_threads(targets: list[tuple[Any, tuple]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=fn, args=args, daemon=True) for fn, args in targets]
    for thread in threads:
        thread.start()
    return threads
