"""The one error type of the API: an HTTP status, a stable machine code and a human message.

Deployments raise :class:`ApiError`; the ingress turns it into ``{"error": {"code", "message"}}``
(HTTP) or an error message and close code (WebSocket). When one request field caused the error
(``text``, ``language``, ``voice``, ``audio``, ``image``, ``portrait_id`` or an option's name),
the body names it too: ``{"error": {"code", "message", "field"}}``, so a form can show the error
beside that input. It pickles with its fields, so it keeps them when Ray carries it from a
replica to the ingress.

:func:`replica_lost` tells a replica that died mid-call (killed, crashed, its node gone) from a
call that failed; the ingress answers the first with :func:`replica_unavailable` (503 with
``Retry-After``) and a stream retries its step once on another replica.
"""

from __future__ import annotations


class ApiError(Exception):
    """A request the server answers with ``status`` and a JSON error body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(status, code, message, field)  # pickled as these args: field survives Ray
        self.status, self.code, self.message, self.field = status, code, message, field

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        return f"{self.status} {self.code}{where}: {self.message}"

    def body(self) -> dict:
        """The JSON error body (``field`` only when one request field caused the error)."""
        error = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


def as_api_error(exc: BaseException) -> ApiError | None:
    """The :class:`ApiError` behind ``exc`` (Ray wraps a replica's exception), or None."""
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, ApiError) and hasattr(exc, "status"):
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None


# Ray's errors when the replica running a call died or cannot be reached: a killed or crashed
# actor (ActorDiedError), one whose node is unreachable (ActorUnavailableError), their base
# (RayActorError), Serve's replica that went away after it was picked (ReplicaUnavailableError).
# Ray may wrap them (a RayTaskError's ``cause``, Serve's RayServeException's ``__cause__``).
_LOST_NAMES = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "ReplicaUnavailableError",
               "WorkerCrashedError", "NodeDiedError")


def _lost_types() -> tuple[type, ...]:
    import ray.exceptions
    import ray.serve.exceptions

    found = (getattr(ray.exceptions, n, None) or getattr(ray.serve.exceptions, n, None) for n in _LOST_NAMES)
    return tuple(t for t in found if isinstance(t, type))


def replica_lost(exc: BaseException | None) -> bool:
    """True when ``exc`` (from awaiting a deployment handle) means the replica died or vanished
    mid-call, rather than the call itself failing: the request may be retried on another one."""
    lost, seen = _lost_types(), 0
    while exc is not None and seen < 5:
        if isinstance(exc, ApiError) and hasattr(exc, "status"):
            return False  # the replica answered (Ray's wrapper of an ApiError is also a RayTaskError)
        if isinstance(exc, lost):
            return True
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return False


def replica_unavailable(what: str = "the server") -> ApiError:
    """The 503 of a request whose replica died under it (the ingress adds ``Retry-After``)."""
    return ApiError(503, "replica_unavailable",
                    f"{what} lost the worker handling this request; try again shortly")


# A failed model load, as /v1/model's ``load_error`` reports it: a code and a short reason, never
# the exception's text (it names URIs, buckets and paths); the full text goes to the replica log.
_LOAD_REASONS = {
    "model_not_found": "the model to load was not found",
    "model_store_unreachable": "the model registry or storage could not be reached",
    "model_unusable": "the model was found but cannot be served",
    "model_load_failed": "the model could not be loaded",
}


def load_failure(exc: BaseException) -> dict:
    """``{"code", "message"}`` of a failed model load (no URIs, paths or exception text)."""
    name = type(exc).__name__
    error_code = str(getattr(exc, "error_code", "") or "")
    if isinstance(exc, FileNotFoundError) or error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
        code = "model_not_found"
    elif isinstance(exc, (ConnectionError, TimeoutError)) or "Connection" in name or "Timeout" in name:
        code = "model_store_unreachable"
    elif isinstance(exc, (ValueError, KeyError, TypeError)):
        code = "model_unusable"
    else:
        code = "model_load_failed"
    return {"code": code, "message": f"{_LOAD_REASONS[code]} ({name})"}
