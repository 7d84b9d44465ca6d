"""DisentTalk: audio-driven, cross-lingual talking-face generation over disentangled face parameters.

The core library is pure Python + numpy + torch; orchestration (Ray, MLflow) lives in
``workflows/``, ``tune/`` and ``serve/``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
