"""The core library imports cleanly and never pulls in Ray or MLflow (DESIGN.md §3)."""

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
