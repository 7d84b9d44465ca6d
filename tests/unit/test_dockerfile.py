"""infra/Dockerfile copies every package the distribution ships (the CLI imports tune and serve)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_copies_every_package_and_the_configs():
    include = re.search(r"^include\s*=\s*\[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M)
    packages = [p.strip().strip('"').rstrip("*") for p in include.group(1).split(",") if p.strip()]
    assert "serve" in packages and "tune" in packages
    copied = set(re.findall(r"^COPY\s+(?:--\S+\s+)*(\S+)\s+\./", (ROOT / "infra/Dockerfile").read_text(),
                            flags=re.M))
    missing = [p for p in (*packages, "configs") if p not in copied]
    assert not missing, f"infra/Dockerfile does not copy {missing}"
