"""The server's speech synthesiser: typed text → 16 kHz speech, with the API's limits and errors.

Languages, voices and example sentences are :mod:`disenttalk.synth.catalogue`'s (the CLI speaks
through the same module); this adds the request limits (``limits.max_text_chars``,
``limits.max_audio_s``) and the HTTP errors, each naming the request field at fault. The engines
are safe to call from several threads: libespeak-ng, whose state is process-global, is
serialised by :mod:`disenttalk.synth.speech`'s lock, a Piper voice by its own, and Festival and
Flite run as programs of their own.
"""

from __future__ import annotations

import io
import wave

import numpy as np

from disenttalk.constants import SAMPLE_RATE
from serve.config import Limits
from serve.errors import ApiError
from serve.inputs import check_duration


def check(text: str, language: str, voice: str | None, limits: Limits) -> str:
    """The stripped ``text`` if it may be spoken by ``voice`` in ``language`` (nothing is spoken):
    400 ``empty_text``, 413 ``text_too_long``, 422 ``unknown_language`` / ``unknown_voice``."""
    from disenttalk.synth import catalogue

    text = text.strip()
    if not text:
        raise ApiError(400, "empty_text", "there is no text to speak", field="text")
    if len(text) > limits.max_text_chars:
        raise ApiError(413, "text_too_long", f"the text is {len(text)} characters long; the limit "
                       f"is {limits.max_text_chars}", field="text")
    try:
        catalogue.voice(language, voice)
    except catalogue.UnknownLanguage as exc:
        raise ApiError(422, "unknown_language", str(exc), field="language") from None
    except catalogue.UnknownVoice as exc:
        raise ApiError(422, "unknown_voice", str(exc), field="voice") from None
    return text


def speak(text: str, language: str = "en", voice: str | None = None,
          limits: Limits = Limits()) -> np.ndarray:
    """``text`` spoken: float32 mono 16 kHz samples, checked as :func:`check` and then 413
    ``audio_too_long`` when the speech is longer than ``limits.max_audio_s``."""
    from disenttalk.synth import catalogue

    audio = catalogue.say(check(text, language, voice, limits), language, voice)
    check_duration(len(audio) / SAMPLE_RATE, limits.max_audio_s, "speech of the text", field="text")
    return audio


def voice_key(language: str, voice: str | None) -> str:
    """The key of the voice a request is spoken with (its own, or the language's default)."""
    from disenttalk.synth import catalogue

    return catalogue.voice(language, voice).key


def voices(limits: Limits) -> dict:
    """``GET /v1/voices``: the languages, their installed voices and examples, the text limit."""
    from disenttalk.synth import catalogue

    return {"languages": catalogue.describe(), "max_text_chars": limits.max_text_chars}


def wav(audio: np.ndarray) -> bytes:
    """float32 mono 16 kHz samples → a 16-bit PCM WAV file in memory."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return buf.getvalue()
