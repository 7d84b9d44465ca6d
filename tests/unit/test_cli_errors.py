"""What a user can fix is said in one line with a non-zero exit, never as a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_stage(args: list[str], tmp_path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full.update(DISENTTALK_HOME=str(tmp_path / "home"), **env)
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300,
                          env=full, cwd=tmp_path)


def one_line(proc: subprocess.CompletedProcess, command: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"disenttalk {command}:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_missing_manifest(tmp_path):
    proc = run_stage(["workflows.preprocess", "--manifest", str(tmp_path / "nope.jsonl"),
                      "--out", str(tmp_path / "store")], tmp_path)
    assert "no manifest at" in one_line(proc, "preprocess")
    assert not (tmp_path / "store").exists()


def test_unknown_model_alias(tmp_path):
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_stage(["workflows.generate", "--model", "models:/disenttalk@nope", "--audio", "a.wav",
                      "--image", "b.png", "--out", "c.mp4"], tmp_path, MLFLOW_TRACKING_URI=db)
    line = one_line(proc, "generate")
    assert "models:/disenttalk@nope" in line and "registered: none" in line


def test_unreachable_tracking_server(tmp_path):
    uri = f"http://127.0.0.1:{_free_port()}"
    proc = run_stage(["workflows.register", "--bundle", str(tmp_path)], tmp_path, MLFLOW_TRACKING_URI=uri)
    assert f"MLflow tracking server {uri} is unreachable" in one_line(proc, "register")
