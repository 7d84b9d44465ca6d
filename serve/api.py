"""HTTP routes, request schemas and JSON errors of the ingress (a FastAPI app per replica).

Every error is ``{"error": {"code": ..., "message": ...}}`` with a 4xx status for the caller's
mistakes and 503 under overload, plus ``"field"`` when one request field caused it. The routes
validate and route; decoding, speech synthesis and generation run in the Portraits and Animator
deployments behind ``backend``'s handles.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from disenttalk.constants import SAMPLE_RATE
from disenttalk.generate.motion import MAX_BLINK_RATE
from serve import speech
from serve.errors import ApiError, as_api_error, replica_lost, replica_unavailable

WEB = Path(__file__).resolve().parent / "web"
# no API key: health, the page, its static files, and the public lists the page starts from
OPEN_PATHS = ("/healthz", "/", "/v1/voices", "/v1/examples")
OPEN_PREFIXES = ("/web/", "/v1/examples/")
logger = logging.getLogger("ray.serve")


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
    text: str | None = Field(None, description="words to speak instead of an `audio` file (at most "
                             "`limits.max_text_chars` characters; see GET /v1/voices)")
    language: str = Field("en", description="language of `text`: a code from GET /v1/voices (en, zh, es)")
    voice: str | None = Field(None, description="voice id for `text` from GET /v1/voices, such as "
                              "espeak/en-us+f2 (default: the language's)")


class SpeechRequest(BaseModel):
    """JSON body of ``POST /v1/speech``."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="words to speak (at most `limits.max_text_chars` characters)")
    language: str = Field("en", description="a language code from GET /v1/voices (en, zh, es)")
    voice: str | None = Field(None, description="a voice id of that language from GET /v1/voices "
                              "(default: the language's)")


class PortraitOptions(BaseModel):
    """Form fields of ``POST /v1/portraits`` besides the image."""

    model_config = ConfigDict(extra="forbid")

    face: int | None = Field(None, ge=0, le=99, description="which face of a group photo (default: largest)")


def error_response(err: ApiError) -> JSONResponse:
    """The JSON error body with its status."""
    headers = {"Retry-After": "1"} if err.status == 503 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _validation_error(status: int, code: str, exc: ValidationError | RequestValidationError) -> ApiError:
    """An ApiError from the first validation error, naming its field (e.g. ``lip_scale``)."""
    err = exc.errors()[0]
    loc = [p for p in err.get("loc", ()) if p not in ("body", "query")]
    where = ".".join(str(p) for p in loc) or "request"
    field = loc[0] if loc and isinstance(loc[0], str) else None
    return ApiError(status, code, f"{where}: {err.get('msg', 'invalid value')}", field=field)


async def _form(request: Request, backend: Any) -> Any:
    """The multipart form, each file capped at ``limits.max_upload_mb`` as it streams in (the
    whole body is counted by :class:`serve.upload.BodyLimit`)."""
    from serve.upload import read_form

    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media", "send multipart/form-data (fields image|portrait_id, audio|text)")
    try:
        return await read_form(request, backend.cfg.limits.max_upload_mb)
    except ApiError:  # a file or the body over its limit: 413
        raise
    except Exception as exc:  # starlette's MultiPartException and parser errors
        raise ApiError(400, "bad_multipart", f"the multipart body could not be parsed ({exc})") from None


async def _file(form: Any, name: str) -> bytes | None:
    part = form.get(name)
    if part is None:
        return None
    if isinstance(part, str):
        raise ApiError(400, "bad_field", f"'{name}' must be a file upload", field=name)
    return await part.read()


async def _call(response: Any) -> Any:
    """Await a deployment call; overload, a replica lost mid-call (503 ``replica_unavailable``)
    and the deployment's own errors become ApiErrors."""
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
        if replica_lost(exc):
            logger.warning("a replica was lost mid-request: %s", type(exc).__name__)
            raise replica_unavailable() from None
        raise


def _handle_errors(app: FastAPI) -> None:
    """Every error answers in the JSON error shape: the API's own, invalid requests, 404 / 405."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(_validation_error(422, "invalid_request", exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(ApiError(exc.status_code, code, str(exc.detail)))


def _add_guard(app: FastAPI, backend: Any) -> None:
    """The Origin allow-list (:mod:`serve.origins`: a request a foreign page sent gets 403), the
    API key check (all but :data:`OPEN_PATHS` and :data:`OPEN_PREFIXES`) and a JSON body for
    errors below the routes."""
    from serve.origins import origin_allowed

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Response:
        if not origin_allowed(request.headers.get("origin"), request.headers.get("host"),
                              backend.cfg.origins):
            return error_response(ApiError(403, "forbidden_origin", "pages of this origin may "
                                           "not use this server (config origins)"))
        path = request.url.path
        open_path = path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
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
        raise _validation_error(422, "invalid_option", exc) from None


def unknown_portrait() -> ApiError:
    """404 for a portrait id that was never uploaded or whose photo has expired."""
    return ApiError(404, "unknown_portrait",
                    "portrait_id is unknown or expired; POST the image to /v1/portraits again",
                    field="portrait_id")


async def _portrait(backend: Any, image: bytes | None, options: GenerateOptions) -> Any:
    """The prepared portrait of a generate request: from its photo, else by its ``portrait_id``
    (any Portraits replica finds it: the photo is in the shared portrait store)."""
    if image is not None:
        return await _call(backend.portraits.prepare.remote(image, True, options.face))
    prepared = await _call(backend.portraits.get.remote(options.portrait_id))
    if prepared is None:
        raise unknown_portrait()
    return prepared


def _summary(summary: dict) -> JSONResponse:
    """A portrait's summary; ``X-Replica`` names the Portraits replica that answered."""
    replica = summary.pop("replica", None)
    return JSONResponse(summary, headers={"X-Replica": str(replica)} if replica else None)


async def _speech(form: Any, options: GenerateOptions, backend: Any) -> tuple[bytes | None, GenerateOptions]:
    """The ``audio`` upload, or None and the checked ``text`` to speak; blank text beside an
    upload is ignored (a form that always sends its text box)."""
    audio, text = await _file(form, "audio"), options.text
    if audio is not None:
        if text is not None and text.strip():
            raise ApiError(400, "audio_and_text", "send the speech as an 'audio' file or as 'text' "
                           "to speak, not both", field="text")
        return audio, options.model_copy(update={"text": None})
    if text is None:
        raise ApiError(400, "missing_field", "send the speech as the 'audio' file field, or 'text' "
                       "to speak", field="audio")
    limits = backend.cfg.limits
    text = await run_in_threadpool(speech.check, text, options.language, options.voice, limits)
    return None, options.model_copy(update={"text": text})


def _add_generation_routes(app: FastAPI, backend: Any) -> None:
    """``POST /v1/portraits``, ``GET /v1/portraits/{id}``, ``POST /v1/generate``, ``WS /v1/stream``."""

    @app.post("/v1/portraits")
    async def portraits(request: Request) -> JSONResponse:
        """Prepare a photo's face; its ``portrait_id`` works on every replica until it expires."""
        form = await _form(request, backend)
        options = _options(PortraitOptions, form)
        data = await _file(form, "image")
        if data is None:
            raise ApiError(400, "missing_field", "send the photo as the 'image' file field", field="image")
        return _summary(await _call(backend.portraits.prepare.remote(data, False, options.face)))

    @app.get("/v1/portraits/{portrait_id}")
    async def portrait(portrait_id: str) -> JSONResponse:
        """What ``POST /v1/portraits`` answered for this id, while the photo is kept (404 after)."""
        if re.fullmatch(r"[0-9a-f]{64}", portrait_id) is None:
            raise unknown_portrait()
        summary = await _call(backend.portraits.get.remote(portrait_id, False))
        if summary is None:
            raise unknown_portrait()
        return _summary(summary)

    @app.post("/v1/generate")
    async def generate(request: Request) -> Response:
        form = await _form(request, backend)
        options = _options(GenerateOptions, form)
        if options.steps is not None and options.steps > backend.cfg.limits.max_steps:
            raise ApiError(422, "invalid_option", f"steps: at most {backend.cfg.limits.max_steps}",
                           field="steps")
        audio, options = await _speech(form, options, backend)
        image = await _file(form, "image")
        if image is None and options.portrait_id is None:
            raise ApiError(400, "missing_field", "send an 'image' file or a 'portrait_id'", field="image")
        prepared = await _portrait(backend, image, options)
        result = await _call(backend.animator.generate.remote(audio, prepared, options))
        meta = result["meta"]
        headers = {"X-Frames": str(meta["frames"]), "X-FPS": str(meta["fps"]),
                   "X-Seconds": str(meta["seconds_of_audio"]),
                   "X-Portrait-Id": prepared.portrait_id,
                   "X-Face-Box": ",".join(map(str, prepared.face_box))}
        if meta.get("voice"):
            headers["X-Voice"] = meta["voice"]
        return Response(result["body"], media_type=result["media_type"], headers=headers)

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        from serve.stream import run_session

        await run_session(ws, backend)


def _add_speech_routes(app: FastAPI, backend: Any) -> None:
    """``GET /v1/voices`` (open) and ``POST /v1/speech``."""

    @app.get("/v1/voices")
    def voices() -> dict:  # a plain def: the first call looks for the engines, off the event loop
        """Languages that typed text can be spoken in: each one's installed voices, its default
        voice and example sentences; and the longest text accepted."""
        return speech.voices(backend.cfg.limits)

    @app.post("/v1/speech", response_class=Response,
              responses={200: {"content": {"audio/wav": {}}, "description":
                               "16 kHz mono PCM16 WAV; X-Seconds: its length, X-Voice: the voice"}})
    async def speak(body: SpeechRequest) -> Response:
        """The text spoken (16 kHz mono WAV): what ``/v1/generate`` speaks for the same fields."""
        limits = backend.cfg.limits
        await run_in_threadpool(speech.check, body.text, body.language, body.voice, limits)
        audio = await _call(backend.animator.speak.remote(body.text, body.language, body.voice))
        headers = {"X-Seconds": f"{len(audio) / SAMPLE_RATE:.3f}",
                   "X-Voice": speech.voice_key(body.language, body.voice)}
        return Response(speech.wav(audio), media_type="audio/wav", headers=headers)


def _add_example_routes(app: FastAPI) -> None:
    """``GET /v1/examples`` and ``GET /v1/examples/{id}.jpg`` (open): public-domain portraits."""
    from serve import examples

    @app.get("/v1/examples")
    async def example_photos() -> dict:
        """Example portraits to try: id, label, source, licence and the URL of the JPEG."""
        return examples.listing()

    @app.get("/v1/examples/{photo_id}.jpg", response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}, "description": "the photo"}})
    def example_photo(photo_id: str) -> Response:  # a plain def: the first call encodes it
        """One example portrait as JPEG."""
        data = examples.jpeg(photo_id)
        if data is None:
            raise ApiError(404, "not_found", f"no example photo {photo_id!r}")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"})


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
    from serve.upload import BodyLimit, body_limits

    app = FastAPI(title="DisentTalk", version="1", summary="Audio-driven talking faces on Ray Serve")
    _handle_errors(app)
    _add_guard(app, backend)
    # outermost: request bytes are counted before any middleware or route reads them
    app.add_middleware(BodyLimit, routes=body_limits(backend.cfg.limits.max_upload_mb))
    _add_status_routes(app, backend)
    _add_generation_routes(app, backend)
    _add_speech_routes(app, backend)
    _add_example_routes(app)
    _add_page_routes(app)
    return app
