"""infra/Dockerfile copies every package the distribution ships (the CLI imports tune and serve)."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_copies_every_package_and_the_configs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = set(re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s+\./", (ROOT / "infra/Dockerfile").read_text(),
                            flags=re.M))
    missing = [p for p in (*packages, "configs") if p not in copied]
    assert not missing, f"infra/Dockerfile does not copy {missing}"
