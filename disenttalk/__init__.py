"""DisentTalk: audio-driven, cross-lingual talking-face generation over disentangled face parameters.

The core library is pure Python + numpy + torch; orchestration (Ray, MLflow) lives in
``workflows/``, ``tune/`` and ``serve/``. ``disenttalk.Generator`` is imported on first use, so
``import disenttalk`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Generator", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Generator":
        from disenttalk.generate import Generator

        return Generator
    raise AttributeError(f"module 'disenttalk' has no attribute {name!r}")
