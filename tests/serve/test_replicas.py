"""More than one replica: portrait ids resolve on every Portraits replica (the shared portrait
store), a generator replica lost mid-request answers 503 and is replaced; the store's bounds."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.serve.conftest import MODEL, SR, TINY, wav_bytes

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120
APP = "disenttalk"


# -- the store, without Ray ------------------------------------------------------------------------
def _store(uri, **kw):
    from serve.store import PortraitStore

    opts = {"max_bytes": 10_000, "max_age_s": 3600.0, "keep_s": 0.0, "sweep_s": 3600.0, **kw}
    return PortraitStore(str(uri), **opts)


def _age(store, pid: str, seconds: float) -> None:
    """Make a stored entry ``seconds`` old."""
    path = store._path(pid)
    then = time.time() - seconds
    os.utime(path, (then, then))


def pid_of(k: int) -> str:
    return hashlib.sha256(str(k).encode()).hexdigest()


def test_store_is_bounded_by_bytes_and_age_not_by_who_uploads(tmp_path):
    from serve.errors import ApiError

    store = _store(tmp_path, keep_s=0.0)
    for k in range(3):  # 3 × ~3 kB: fits in 10 kB
        store.put(pid_of(k), k, bytes([k]) * 3000)
        _age(store, pid_of(k), 300 - 100 * k)  # 0 is the oldest
    store.put(pid_of(3), None, b"\x03" * 3000)  # past the bound: the oldest goes
    assert store.get(pid_of(0)) is None and store.get(pid_of(1)) == (1, b"\x01" * 3000)
    assert store.stored_bytes() <= 10_000
    # entries younger than keep_s are never removed to make room: a flood gets 503 instead
    guarded = _store(tmp_path, keep_s=600.0)
    with pytest.raises(ApiError) as full:
        guarded.put(pid_of(9), None, b"\x09" * 3000)
    assert (full.value.status, full.value.code) == (503, "portrait_store_full")
    assert all(guarded.get(pid_of(k)) is not None for k in (1, 2, 3))
    # age: an entry past max_age_s is gone for readers at once and from the disk at the next sweep
    _age(store, pid_of(1), 4000)
    assert store.get(pid_of(1)) is None and store.get(pid_of(2)) is not None
    store.sweep()
    assert not Path(store._path(pid_of(1))).exists() and Path(store._path(pid_of(2))).exists()


def test_store_takes_concurrent_puts_and_another_process_reads_them(tmp_path):
    from serve.portraits import content_id

    store = _store(tmp_path, max_bytes=10_000_000)
    secret = store.secret()
    photos = {k: np.random.default_rng(k).bytes(2000 + k) for k in range(24)}
    ids = {k: content_id(data, k % 3, secret) for k, data in photos.items()}
    assert ids[0] != content_id(photos[0], 0)  # not computable from the photo alone

    def put(k: int) -> None:
        _store(tmp_path, max_bytes=10_000_000).put(ids[k], k % 3, photos[k])  # each a "replica"

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, [*photos, *photos]))  # every photo twice, at once
    assert all(store.get(ids[k]) == (k % 3, photos[k]) for k in photos)
    code = ("import sys; from serve.store import PortraitStore; from serve.portraits import content_id\n"
            f"s = PortraitStore({str(tmp_path)!r}, 10**7, 3600.0)\n"
            f"face, data = s.get({ids[5]!r}); assert content_id(data, face, s.secret()) == {ids[5]!r}\n"
            "sys.stdout.write(str(len(data)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == str(len(photos[5])), out.stderr


def test_replicas_starting_together_on_an_empty_folder_all_store_their_first_photo(tmp_path):
    """The first puts of replicas that start at once on a folder with nothing in it yet."""
    from serve.store import RECORD_SUFFIX

    failures = []

    def first_put(root: Path, start: threading.Barrier, k: int) -> None:
        store = _store(root, max_bytes=10_000_000)
        start.wait()
        try:
            store.put(pid_of(k), 0, b"photo" * 20)
        except Exception as exc:  # noqa: BLE001 - collected and reported below
            failures.append(f"{root.name}/{k}: {exc}")

    for trial in range(40):
        root, start = tmp_path / f"store{trial}", threading.Barrier(6)
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda k: first_put(root, start, k), range(6)))  # noqa: B023 - joined here
        assert len(list((root / "photos").rglob("*" + RECORD_SUFFIX))) == 6
    assert failures == []


def test_store_on_s3_shares_photos_and_secret(s3_endpoint):
    from workflows.platform import storage

    storage.ensure_bucket("s3://portraits-test/x")
    first, second = _store("s3://portraits-test/serve"), _store("s3://portraits-test/serve")
    assert first.secret() == second.secret()
    first.put(pid_of(1), 2, b"photo")
    assert second.get(pid_of(1)) == (2, b"photo") and second.get(pid_of(2)) is None


def test_a_failed_reload_reports_a_code_not_its_uri():
    from serve.deployments import Animator

    class Engine:
        model = type("M", (), {"info": {"uri": "models:/m/1"}})()
        cfg = type("C", (), {"model_uri": "models:/m/1"})()
        load_error = None

        def load(self, uri):
            raise FileNotFoundError(f"s3://bucket/secret/path/{uri}")

    animator = Animator.func_or_class.__new__(Animator.func_or_class)
    animator.engine = Engine()
    animator.reconfigure({"model_uri": "s3://bucket/models/x"})
    error = animator.engine.load_error
    assert error["code"] == "model_not_found" and "s3://" not in error["message"] and "/" not in error["message"]


# -- one app: 2 Portraits and 2 generator replicas ------------------------------------------------
@pytest.fixture(scope="module")
def app_config(registered, portrait_store):
    from serve.app import load

    return load(None, [f"model_uri=models:/{MODEL}@champion", *TINY, f"portrait_store.uri={portrait_store}",
                       "portraits.num_replicas=2", "generator.num_replicas=2"])


def _replicas(deployment: str) -> dict[str, object]:
    """Actor handles of the deployment's live replicas, by actor name."""
    import ray

    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith(f"SERVE_REPLICA::{APP}#{deployment}#")]
    out = {}
    for name in names:
        try:
            out[name] = ray.get_actor(name, namespace="serve")
        except ValueError:  # died since the listing
            pass
    return out


def _running(deployment: str) -> int:
    from ray import serve

    status = serve.status().applications[APP].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


@pytest.mark.ray
def test_portrait_ids_resolve_on_every_portraits_replica(server, portrait_png, speech):
    posted = requests.post(f"{server}/v1/portraits", files={"image": ("a.png", portrait_png)}, timeout=TIMEOUT)
    assert posted.status_code == 200, posted.text
    pid = posted.json()["portrait_id"]
    assert pid != hashlib.sha256(portrait_png).hexdigest()  # keyed: not guessable from the photo

    def get(_: int) -> requests.Response:
        return requests.get(f"{server}/v1/portraits/{pid}", timeout=TIMEOUT)

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(get, range(20)))
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers if r.status_code != 200]
    assert all(r.json() == posted.json() for r in answers)
    assert len({r.headers["x-replica"] for r in answers} | {posted.headers["x-replica"]}) == 2
    video = requests.post(f"{server}/v1/generate", files={"audio": ("s.wav", wav_bytes(speech))},
                          data={"portrait_id": pid, "output": "motion"}, timeout=TIMEOUT)
    assert video.status_code == 200, video.text
    missing = requests.get(f"{server}/v1/portraits/{'0' * 64}", timeout=TIMEOUT)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unknown_portrait")


def _kill_the_busy_one(deadline: float) -> str:
    """Kill the generator replica that is running a request; its actor name."""
    import ray

    while time.time() < deadline:
        for name, actor in _replicas("Animator").items():
            if ray.get(actor.get_num_ongoing_requests.remote(), timeout=10) > 0:
                ray.kill(actor, no_restart=True)
                return name
        time.sleep(0.05)
    raise AssertionError("no generator replica took the request")


@pytest.mark.ray
def test_a_generator_replica_killed_mid_request_is_a_503_and_is_replaced(server, portrait_png, speech):
    posted = requests.post(f"{server}/v1/portraits", files={"image": ("a.png", portrait_png)}, timeout=TIMEOUT)
    pid, answer = posted.json()["portrait_id"], {}
    long = wav_bytes(np.tile(speech, 5)[: int(7.5 * SR)])  # 7.5 s at 100 steps: seconds of work

    def slow() -> None:
        answer["r"] = requests.post(f"{server}/v1/generate", files={"audio": ("s.wav", long)},
                                    data={"portrait_id": pid, "steps": "100"}, timeout=TIMEOUT)

    before = set(_replicas("Animator"))
    assert len(before) == 2
    caller = threading.Thread(target=slow)
    caller.start()
    killed = _kill_the_busy_one(time.time() + 60)
    caller.join(TIMEOUT)
    r = answer["r"]
    assert r.status_code == 503 and r.json()["error"]["code"] == "replica_unavailable", r.text
    assert int(r.headers["retry-after"]) >= 1
    again = requests.post(f"{server}/v1/generate", files={"audio": ("s.wav", wav_bytes(speech))},
                          data={"portrait_id": pid, "output": "motion"}, timeout=TIMEOUT)
    assert again.status_code == 200, again.text  # on the survivor (or already the replacement)
    deadline = time.time() + 90  # the controller's health check finds it dead and starts another
    while not (_running("Animator") == 2 and len(set(_replicas("Animator")) - before) == 1):
        assert time.time() < deadline, "the killed replica was not replaced"
        time.sleep(1)
    assert killed not in _replicas("Animator")
    again = requests.post(f"{server}/v1/generate", files={"audio": ("s.wav", wav_bytes(speech))},
                          data={"portrait_id": pid, "output": "motion"}, timeout=TIMEOUT)
    assert again.status_code == 200, again.text
