"""``disenttalk preprocess``: a manifest of talking-head clips → the preprocessed-clip store.

Ray Data runs :class:`workflows.preprocess.worker.ClipProcessor` actors over the manifest rows
(``compute=ActorPoolStrategy(min_size, max_size)``); each actor writes its clips' records
straight to the output URI and returns a small status row. The driver then rewrites the
index and rejects tables (see :mod:`workflows.platform.clipstore`) and prints a summary. Clips whose
content hash is already in the store are skipped, so re-running is cheap and idempotent.

Also a Ray job entrypoint: ``python -m workflows.preprocess --manifest URI --out URI``.
"""

from workflows.preprocess.driver import cli, read_manifest, run

__all__ = ["cli", "read_manifest", "run"]
