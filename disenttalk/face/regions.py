"""Semantic split of expression dimensions into lip / eye / global subspaces (paper Eq. 1–2)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

REGIONS = ("lip", "eye", "global")


@dataclass(frozen=True)
class RegionSplit:
    """Expression-dimension indices per region; ``scores`` holds |Δ|/σ per dimension for lip and eye."""

    lip: tuple[int, ...]
    eye: tuple[int, ...]
    global_: tuple[int, ...]
    scores: dict[str, tuple[float, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        dims = list(self.lip) + list(self.eye) + list(self.global_)
        if len(set(dims)) != len(dims):
            raise ValueError("RegionSplit: a dimension belongs to more than one region")
        if sorted(dims) != list(range(len(dims))):
            raise ValueError("RegionSplit: regions must partition 0..N-1")

    @property
    def num_dims(self) -> int:
        """N, the expression dimensionality."""
        return len(self.lip) + len(self.eye) + len(self.global_)

    def indices(self, region: str) -> tuple[int, ...]:
        """Dimension indices of ``region`` (one of ``lip``, ``eye``, ``global``)."""
        if region not in REGIONS:
            raise KeyError(f"unknown region {region!r}; expected one of {REGIONS}")
        return self.global_ if region == "global" else getattr(self, region)

    def to_dict(self) -> dict:
        """JSON-compatible dict."""
        return {
            "lip": list(self.lip),
            "eye": list(self.eye),
            "global": list(self.global_),
            "scores": {k: list(v) for k, v in self.scores.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> RegionSplit:
        """Inverse of :meth:`to_dict`."""
        return cls(
            lip=tuple(int(i) for i in data["lip"]),
            eye=tuple(int(i) for i in data["eye"]),
            global_=tuple(int(i) for i in data["global"]),
            scores={k: tuple(float(x) for x in v) for k, v in data.get("scores", {}).items()},
        )

    def save(self, path: str | Path) -> None:
        """Write JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> RegionSplit:
        """Read JSON written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def contiguous(cls, num_dims: int, k_lip: int, k_eye: int) -> RegionSplit:
        """A split with lip = first k_lip dims, eye = next k_eye (for tests and random-weight benchmarks)."""
        if k_lip + k_eye > num_dims:
            raise ValueError("k_lip + k_eye exceeds the number of dimensions")
        return cls(
            lip=tuple(range(k_lip)),
            eye=tuple(range(k_lip, k_lip + k_eye)),
            global_=tuple(range(k_lip + k_eye, num_dims)),
        )
