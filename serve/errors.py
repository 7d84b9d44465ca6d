"""The one error type of the API: an HTTP status, a stable machine code and a human message.

Deployments raise :class:`ApiError`; the ingress turns it into ``{"error": {"code", "message"}}``
(HTTP) or an error message and close code (WebSocket). When one request field caused the error
(``text``, ``language``, ``voice``, ``audio``, ``image``, ``portrait_id`` or an option's name),
the body names it too: ``{"error": {"code", "message", "field"}}``, so a form can show the error
beside that input. It pickles with its fields, so it keeps them when Ray carries it from a
replica to the ingress.
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
