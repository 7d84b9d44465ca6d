"""HTTP routes, request schemas and JSON errors of the ingress (a FastAPI app per replica).

Every error is ``{"error": {"code": ..., "message": ...}}`` with a 4xx status for the caller's
mistakes and 503 under overload. The routes validate and route; decoding and generation run in
the Portraits and Animator deployments behind ``backend``'s handles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from disenttalk.generate.motion import MAX_BLINK_RATE
from serve.errors import ApiError, as_api_error

WEB = Path(__file__).resolve().parent / "web"
OPEN_PATHS = ("/healthz", "/", "/web/")  # no API key: health and the page's static files


class GenerateOptions(BaseModel):
    """Form fields of ``POST /v1/generate`` besides the files."""

    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(None, ge=1, le=100, description="DDIM steps (default: server's)")
    guidance: float | None = Field(None, ge=0.0, le=10.0, description="classifier-free guidance s")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    lip_scale: float = Field(1.0, ge=0.0, le=3.0)
    eye_scale: float = Field(1.0, ge=0.0, le=3.0)
    global_scale: float = Field(1.0, ge=0.0, le=3.0)
    blinks: bool = Field(True, description="add the training corpus's blinks when the model has them")
    blink_rate: float | None = Field(None, ge=0.0, le=MAX_BLINK_RATE,
                                     description="blinks per second (default: the corpus's own rate)")
    crop_only: bool = False
    output: Literal["mp4", "motion", "json", "npz"] = "mp4"
    portrait_id: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    face: int | None = Field(None, ge=0, le=99, description="which face of a group photo (default: largest)")


class PortraitOptions(BaseModel):
    """Form fields of ``POST /v1/portraits`` besides the image."""

    model_config = ConfigDict(extra="forbid")

    face: int | None = Field(None, ge=0, le=99, description="which face of a group photo (default: largest)")


def error_response(err: ApiError) -> JSONResponse:
    """The JSON error body with its status."""
    headers = {"Retry-After": "1"} if err.status == 503 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query")) or "request"
    return f"{where}: {err.get('msg', 'invalid value')}"


async def _form(request: Request, backend: Any) -> Any:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media", "send multipart/form-data (fields image|portrait_id, audio)")
    length = request.headers.get("content-length")
    limit = 2 * backend.cfg.limits.max_upload_mb * 1024 * 1024 + 65536
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, "upload_too_large",
                       f"the request is {int(length) / 1e6:.1f} MB; each file may be "
                       f"{backend.cfg.limits.max_upload_mb:g} MB")
    try:
        return await request.form(max_files=2, max_fields=16)
    except Exception as exc:  # starlette's MultiPartException and parser errors
        raise ApiError(400, "bad_multipart", f"the multipart body could not be parsed ({exc})") from None


async def _file(form: Any, name: str) -> bytes | None:
    part = form.get(name)
    if part is None:
        return None
    if isinstance(part, str):
        raise ApiError(400, "bad_field", f"'{name}' must be a file upload")
    return await part.read()


async def _call(response: Any) -> Any:
    """Await a deployment call; overload and the deployment's own errors become ApiErrors."""
    from ray.serve.exceptions import BackPressureError

    try:
        return await response
    except BackPressureError:
        raise ApiError(503, "overloaded", "the server is busy; try again shortly") from None
    except ApiError:
        raise
    except Exception as exc:
        api = as_api_error(exc)
        if api is not None:
            raise api from None
        raise


def _handle_errors(app: FastAPI) -> None:
    """Every error answers in the JSON error shape: the API's own, invalid requests, 404 / 405."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(ApiError(422, "invalid_request", _validation_message(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, code, str(exc.detail)))


def _add_guard(app: FastAPI, backend: Any) -> None:
    """The API key check (all but :data:`OPEN_PATHS`) and a JSON body for errors below the routes."""

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Response:
        path = request.url.path
        open_path = path in OPEN_PATHS[:2] or path.startswith(OPEN_PATHS[2])
        if backend.api_key is not None and not open_path:
            if not backend.key_ok(request.headers.get("x-api-key")):
                return error_response(ApiError(401, "unauthorized",
                                               "send the API key in the X-API-Key header"))
        try:
            return await call_next(request)
        except Exception as exc:  # an error below the route handlers: still the JSON shape
            api = as_api_error(exc) or ApiError(500, "internal_error", type(exc).__name__)
            return error_response(api)


def _add_status_routes(app: FastAPI, backend: Any) -> None:
    """``GET /healthz`` and ``GET /v1/model``."""

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model() -> dict:
        return await _call(backend.animator.info.remote())


def _options(model: type[BaseModel], form: Any) -> Any:
    """The form's text fields validated as ``model``."""
    try:
        return model.model_validate({k: v for k, v in form.multi_items() if isinstance(v, str)})
    except ValidationError as exc:
        raise ApiError(422, "invalid_option", _validation_message(exc)) from None


async def _portrait(backend: Any, image: bytes | None, options: GenerateOptions) -> Any:
    """The prepared portrait of a generate request: from its photo, else by its ``portrait_id``."""
    if image is not None:
        return await _call(backend.portraits.prepare.remote(image, True, options.face))
    prepared = await _call(backend.portraits.get.remote(options.portrait_id))
    if prepared is None:
        raise ApiError(404, "unknown_portrait",
                       "portrait_id is unknown or expired; POST the image to /v1/portraits again")
    return prepared


def _add_generation_routes(app: FastAPI, backend: Any) -> None:
    """``POST /v1/portraits``, ``POST /v1/generate`` and ``WS /v1/stream``."""

    @app.post("/v1/portraits")
    async def portraits(request: Request) -> dict:
        form = await _form(request, backend)
        options = _options(PortraitOptions, form)
        data = await _file(form, "image")
        if data is None:
            raise ApiError(400, "missing_field", "send the photo as the 'image' file field")
        return await _call(backend.portraits.prepare.remote(data, False, options.face))

    @app.post("/v1/generate")
    async def generate(request: Request) -> Response:
        form = await _form(request, backend)
        options = _options(GenerateOptions, form)
        if options.steps is not None and options.steps > backend.cfg.limits.max_steps:
            raise ApiError(422, "invalid_option", f"steps: at most {backend.cfg.limits.max_steps}")
        image, audio = await _file(form, "image"), await _file(form, "audio")
        if audio is None:
            raise ApiError(400, "missing_field", "send the speech as the 'audio' file field")
        if image is None and options.portrait_id is None:
            raise ApiError(400, "missing_field", "send an 'image' file or a 'portrait_id'")
        prepared = await _portrait(backend, image, options)
        result = await _call(backend.animator.generate.remote(audio, prepared, options))
        meta = result["meta"]
        headers = {"X-Frames": str(meta["frames"]), "X-FPS": str(meta["fps"]),
                   "X-Portrait-Id": prepared.portrait_id,
                   "X-Face-Box": ",".join(map(str, prepared.face_box))}
        return Response(result["body"], media_type=result["media_type"], headers=headers)

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        from serve.stream import run_session

        await run_session(ws, backend)


def _add_page_routes(app: FastAPI) -> None:
    """The browser page (``GET /``) and its own static files (``GET /web/{name}``)."""

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @app.get("/web/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        files = {p.name: p for p in WEB.iterdir() if p.is_file()}  # only the page's own files
        if name not in files:
            raise ApiError(404, "not_found", "no such file")
        kind = {".js": "text/javascript", ".css": "text/css"}.get(files[name].suffix, "text/plain")
        return FileResponse(files[name], media_type=kind)


def create_app(backend: Any) -> FastAPI:
    """The ingress app; ``backend`` has ``portraits``/``animator`` handles, ``cfg``, ``api_key``."""
    app = FastAPI(title="DisentTalk", version="1", summary="Audio-driven talking faces on Ray Serve")
    _handle_errors(app)
    _add_guard(app, backend)
    _add_status_routes(app, backend)
    _add_generation_routes(app, backend)
    _add_page_routes(app)
    return app
