"""The core library imports cleanly and never pulls in Ray or MLflow (docs/design.md §1)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import importlib, pkgutil, sys
import disenttalk
names = [m.name for m in pkgutil.walk_packages(disenttalk.__path__, "disenttalk.")]
for name in names:
    importlib.import_module(name)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"ray", "mlflow"})
print(len(names))
print(",".join(heavy))
"""


def test_core_imports_neither_ray_nor_mlflow():
    proc = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    count, heavy = (proc.stdout.strip().splitlines() + [""])[:2]
    assert int(count) >= 10  # media, face/*, model/*, ...: the walk found the package
    assert heavy == "", f"core import pulled in: {heavy}"


def test_face_package_import_does_not_start_mediapipe():
    """Importing the face package is cheap: MediaPipe loads only when a tracker runs."""
    probe = "import sys, disenttalk.face, disenttalk.media; print('mediapipe' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_cli_help_imports_neither_torch_nor_ray():
    """``disenttalk --help`` (and each stage's --help) is quick: heavy libraries load in commands."""
    probe = """
import sys
from workflows.cli import app
for args in (["--help"], ["generate", "--help"], ["curve", "--help"], ["bench", "--help"]):
    try:
        app(args)
    except SystemExit as exc:
        assert exc.code == 0, (args, exc.code)
print("heavy:" + ",".join(sorted(m for m in ("torch", "ray", "mlflow") if m in sys.modules)))
"""
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Commands" in proc.stdout and "curve" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "heavy:"


def test_every_stage_module_runs_as_a_job_entrypoint():
    """``python -m workflows.<stage>`` runs the stage's command (here: its --help), not nothing."""
    for stage in ("evaluate", "demo_data", "inspect", "curve", "bench", "generate", "quickstart", "train",
                  "preprocess", "manifest", "fit", "register", "pipeline"):
        proc = subprocess.run([sys.executable, "-m", f"workflows.{stage}", "--help"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "--help" in proc.stdout and "Usage" in proc.stdout, (stage, proc.stderr)
