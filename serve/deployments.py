"""The three deployments: the HTTP/WebSocket ingress, portrait preparation and the generator.

Split so each scales on its own load: portraits are prepared once per photo (face tracking,
cached by content hash) and generation, the heavy part, autoscales on ongoing requests. The
ingress only routes and validates; it holds no model.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from ray import serve

from serve.config import ServeConfig
from serve.errors import ApiError, load_failure
from serve.keys import API_KEY_ENV

logger = logging.getLogger("ray.serve")


def _replica_name() -> str:
    """This replica's id (a response header tells clients and tests which one answered)."""
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside Serve (unit tests)
        return f"pid{os.getpid()}"


# A replica whose actor died (killed, crashed, its node gone) is replaced by the controller once a
# health check fails; checks every 2 s rather than Serve's 10 s notice a lost replica sooner.
HEALTH = {"health_check_period_s": 2.0, "health_check_timeout_s": 30.0}


@serve.deployment(**HEALTH)
class Portraits:
    """Photo bytes → a prepared :class:`~serve.portraits.Portrait`, found by id on every replica.

    The uploaded photo is kept in the shared :class:`~serve.store.PortraitStore` under its id;
    this replica's prepared portraits are an LRU cache (``portrait_cache``) that prepares a
    stored photo again on a miss, so an id resolves whichever replica is asked.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        from serve.store import LruCache, PortraitStore

        self.cfg = ServeConfig.from_dict(cfg)
        self.store = PortraitStore.from_config(self.cfg.portrait_store)
        self.secret = self.store.secret()
        self.cache = LruCache(self.cfg.portrait_cache)
        self.replica = _replica_name()

    def prepare(self, data: bytes, full: bool = False, face: int | None = None) -> Any:
        """The portrait of ``data`` (prepared now or found in the cache), stored for every replica:
        itself (``full``) or its summary with ``"replica"``, the id of the replica that answered.

        ``face`` picks a face of a group photo by index (default: the largest usable one).
        """
        from serve.inputs import check_upload
        from serve.portraits import content_id

        check_upload(data, self.cfg.limits, "image")  # before hashing: an oversized photo costs nothing
        pid = content_id(data, face, self.secret)
        portrait = self.cache.get(pid) or self._prepare(pid, data, face)
        self.store.put(pid, face, data)  # only photos with a usable face are kept
        self.cache.put(pid, portrait)
        return portrait if full else {**portrait.summary(), "replica": self.replica}

    def get(self, portrait_id: str, full: bool = True) -> Any:
        """The portrait of ``portrait_id`` (this replica's cache, else prepared from the store), or
        None when it was never uploaded or has expired; ``full=False``: as :meth:`prepare`."""
        from serve.portraits import content_id

        portrait = self.cache.get(portrait_id)
        if portrait is None:
            stored = self.store.get(portrait_id)
            if stored is None:
                return None
            face, data = stored
            if content_id(data, face, self.secret) != portrait_id:
                logger.warning("portrait store: %s holds another photo; ignored", portrait_id)
                return None
            portrait = self._prepare(portrait_id, data, face)
            self.cache.put(portrait_id, portrait)
        return portrait if full else {**portrait.summary(), "replica": self.replica}

    def _prepare(self, pid: str, data: bytes, face: int | None) -> Any:
        from serve.inputs import decode_image
        from serve.portraits import prepare

        photo = decode_image(data, self.cfg.limits, max_side=self.cfg.limits.max_photo_side)
        return prepare(pid, photo, face)


@serve.deployment(**HEALTH)
class Animator:
    """The model: offline videos and stream steps. ``user_config: {model_uri}`` (re)loads it."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from serve.engine import Engine
        from serve.store import LruCache

        self.engine = Engine(ServeConfig.from_dict(cfg))
        self.portraits = LruCache(16)  # streams' portraits, by id

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Load the model named by ``user_config["model_uri"]`` if it changed.

        A failed reload keeps the model that is serving (and says why in ``/v1/model``); only
        a replica with no model at all fails, so Serve replaces it.
        """
        uri = user_config.get("model_uri") or self.engine.cfg.model_uri
        model = self.engine.model
        if model is not None and model.info["uri"] == uri:
            return
        try:
            info = self.engine.load(uri)
        except Exception as exc:
            if model is None:
                raise
            # /v1/model says what kind of failure, never the text (it names URIs and paths)
            self.engine.load_error = load_failure(exc)
            logger.error("model reload of %s failed, still serving %s: %s: %s", uri,
                         model.info["uri"], type(exc).__name__, exc)
            return
        logger.info("loaded model %s (version %s) in %.1f s", uri, info["version"], info["load_s"])

    def check_health(self) -> None:
        """Serve's health probe: a replica without a model is restarted."""
        self.engine.current()

    def info(self) -> dict[str, Any]:
        return self.engine.info()

    def generate(self, audio: bytes | None, portrait: Any, options: Any) -> dict[str, Any]:
        """Decode the speech (or speak ``options.text`` when ``audio`` is None) and make the
        video / motion."""
        from serve import speech
        from serve.inputs import decode_audio

        steps = options.steps or self.engine.cfg.steps
        options = options.model_copy(update={"steps": steps})
        limits = self.engine.cfg.limits
        if audio is not None:
            return self.engine.generate(decode_audio(audio, limits), portrait, options)
        samples = speech.speak(options.text, options.language, options.voice, limits)
        result = self.engine.generate(samples, portrait, options)
        result["meta"]["voice"] = speech.voice_key(options.language, options.voice)
        return result

    def speak(self, text: str, language: str = "en", voice: str | None = None) -> Any:
        """``text`` spoken (float32 mono 16 kHz samples), within the request limits."""
        from serve import speech

        return speech.speak(text, language, voice, self.engine.cfg.limits)

    def stream_open(self, start: Any) -> dict[str, Any]:
        from serve.stream import open_stream

        return open_stream(self.engine, start)

    def stream_step(self, state: dict[str, Any], audio: Any, final: bool, portrait: Any,
                    portrait_id: str) -> Any:
        """One step of a stream, called with ``stream=True``: each window's frames as it is
        rendered, then the new state; asks for the portrait when this replica has not seen it."""
        from serve.stream import needs_portrait, step_stream

        if portrait is None:
            portrait = self.portraits.get(portrait_id)
            if portrait is None:
                return needs_portrait()
        self.portraits.put(portrait_id, portrait)
        return step_stream(self.engine, state, audio, final, portrait)


@serve.deployment
@serve.ingress()
class Ingress:
    """FastAPI routes (:mod:`serve.api`) and the WebSocket stream (:mod:`serve.stream`).

    ``api_key_sha256``: the SHA-256 digest of the API key (:mod:`serve.keys`; None: no key).
    ``api_key`` holds that digest: routes only test it against None and call :meth:`key_ok`.
    """

    def __init__(self, portraits: Any, animator: Any, cfg: dict[str, Any],
                 api_key_sha256: str | None = None) -> None:
        from serve.loopwatch import LoopWatch
        from serve.shutdown import Connections
        from serve.upload import bound_heap

        bound_heap()

        self.portraits, self.animator = portraits, animator
        self.cfg = ServeConfig.from_dict(cfg)
        self.api_key = api_key_sha256
        self.connections = Connections()
        self.watch = LoopWatch()

    async def check_health(self) -> None:
        """Serve's health check, run on the event loop the routes run on: the first one starts
        the watch that logs every thread's stack should that loop stop (:mod:`serve.loopwatch`)."""
        self.watch.attach(asyncio.get_running_loop())

    def key_ok(self, key: str | None) -> bool:
        """Whether ``key`` is the configured key (constant-time comparison of SHA-256 digests)."""
        from serve.keys import matches

        return matches(key, self.api_key)

    async def drain(self, window_s: float) -> dict[str, Any]:
        """Shutdown (:mod:`serve.shutdown`): refuse new requests and streams, let those in
        flight run up to ``window_s``, close the rest; returns once this replica is drained."""
        return {"replica": _replica_name(), **await self.connections.drain(window_s)}

    def __serve_build_asgi_app__(self) -> Any:
        from serve.api import create_app
        from serve.shutdown import DrainMiddleware

        app = create_app(self)
        app.add_middleware(DrainMiddleware, connections=self.connections)  # outermost
        return app


__all__ = ["API_KEY_ENV", "Animator", "ApiError", "Ingress", "Portraits"]
