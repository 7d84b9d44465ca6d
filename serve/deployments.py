"""The three deployments: the HTTP/WebSocket ingress, portrait preparation and the generator.

Split so each scales on its own load: portraits are prepared once per photo (face tracking,
cached by content hash) and generation, the heavy part, autoscales on ongoing requests. The
ingress only routes and validates; it holds no model.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections import OrderedDict
from typing import Any

from ray import serve

from serve.config import ServeConfig
from serve.errors import ApiError

logger = logging.getLogger("ray.serve")
API_KEY_ENV = "DISENTTALK_API_KEY"


@serve.deployment
class Portraits:
    """Photo bytes → a prepared :class:`~serve.portraits.Portrait`, kept in an LRU cache by hash."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = ServeConfig.from_dict(cfg)
        self.cache: OrderedDict[str, Any] = OrderedDict()

    def prepare(self, data: bytes, full: bool = False, face: int | None = None) -> Any:
        """The portrait of ``data`` (prepared now or found in the cache): its summary, or itself.

        ``face`` picks a face of a group photo by index (default: the largest usable one).
        """
        from serve.inputs import decode_image
        from serve.portraits import content_id, prepare

        pid = content_id(data, face)
        portrait = self.get(pid)
        if portrait is None:
            photo = decode_image(data, self.cfg.limits, max_side=self.cfg.limits.max_photo_side)
            portrait = prepare(pid, photo, face)
            self.cache[pid] = portrait
            while len(self.cache) > self.cfg.portrait_cache:
                self.cache.popitem(last=False)
        return portrait if full else portrait.summary()

    def get(self, portrait_id: str) -> Any:
        """A cached portrait, or None."""
        portrait = self.cache.get(portrait_id)
        if portrait is not None:
            self.cache.move_to_end(portrait_id)
        return portrait


@serve.deployment
class Animator:
    """The model: offline videos and stream steps. ``user_config: {model_uri}`` (re)loads it."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from serve.engine import Engine

        self.engine = Engine(ServeConfig.from_dict(cfg))
        self.portraits: OrderedDict[str, Any] = OrderedDict()  # streams' portraits, by id

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
            self.engine.load_error = f"{uri}: {type(exc).__name__}: {exc}"
            logger.error("model reload failed, still serving %s: %s", model.info["uri"], exc)
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
                    portrait_id: str) -> dict[str, Any]:
        """One step of a stream; asks for the portrait when this replica has not seen it."""
        from serve.stream import step_stream

        if portrait is None:
            portrait = self.portraits.get(portrait_id)
            if portrait is None:
                return {"need_portrait": True}
        self.portraits[portrait_id] = portrait
        self.portraits.move_to_end(portrait_id)
        while len(self.portraits) > 16:
            self.portraits.popitem(last=False)
        return step_stream(self.engine, state, audio, final, portrait)


@serve.deployment
@serve.ingress()
class Ingress:
    """FastAPI routes (:mod:`serve.api`) and the WebSocket stream (:mod:`serve.stream`)."""

    def __init__(self, portraits: Any, animator: Any, cfg: dict[str, Any]) -> None:
        self.portraits, self.animator = portraits, animator
        self.cfg = ServeConfig.from_dict(cfg)
        self.api_key = os.environ.get(API_KEY_ENV) or None

    def key_ok(self, key: str | None) -> bool:
        """Constant-time comparison with the configured key."""
        return key is not None and self.api_key is not None and hmac.compare_digest(
            key.encode(), self.api_key.encode())

    def __serve_build_asgi_app__(self) -> Any:
        from serve.api import create_app

        return create_app(self)


__all__ = ["API_KEY_ENV", "Animator", "ApiError", "Ingress", "Portraits"]
