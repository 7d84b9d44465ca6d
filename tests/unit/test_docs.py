"""The documentation: the MkDocs site builds with no warnings, and the README stays a front door."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_LINES = 200


def test_site_builds_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "index.html").is_file()
    serving = site / "serving" / "index.html"
    assert serving.is_file()
    schema = json.loads((site / "openapi.json").read_text())
    assert {"/v1/generate", "/v1/portraits", "/v1/model", "/healthz"} <= set(schema["paths"])
    page = serving.read_text()
    assert "<!-- openapi -->" not in page
    for endpoint in ("POST /v1/generate", "POST /v1/portraits", "WS /v1/stream"):
        assert endpoint in page, endpoint
    assert "lip_scale" in page  # the generate fields, from the app's own request model
    assert (site / "reference" / "model" / "index.html").is_file()


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; keep it a front door"


def test_readme_links_exist() -> None:
    text = README.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links only, not code
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    relative = [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]
    assert relative, "the README links to the docs pages"
    missing = [t for t in relative if not (ROOT / t.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
