"""What typed text can be spoken in: languages, their voices installed here and example sentences.

The server (``POST /v1/speech``, ``/v1/generate`` with ``text``) and ``disenttalk generate
--text`` speak through :func:`say`. A language lists only the voices of
:data:`disenttalk.synth.voices.CATALOGUE` that can be spoken on this machine: espeak-ng (the
``espeakng-loader`` wheel, always present) and Festival, Flite or Piper voices where they are
installed. A voice is named by its key, ``engine/name`` (``espeak/en-us+f2``,
``festival/kal_diphone``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from disenttalk.synth.voices import CATALOGUE, Voice, missing, speak


@dataclass(frozen=True)
class Language:
    """A language text can be typed in: its display name, default voice and example sentences."""

    code: str  # ISO 639-1, as CATALOGUE's voices
    name: str
    default_voice: str  # a voice key, always an espeak-ng voice (so always installed)
    examples: tuple[str, ...]


LANGUAGES: dict[str, Language] = {lang.code: lang for lang in (
    Language("en", "English", "espeak/en-us", (
        "Hello! It's lovely to meet you.",
        "The weather is perfect for a walk in the park today.",
        "Could you tell me the way to the train station?",
    )),
    Language("zh", "Chinese (Mandarin)", "espeak/cmn", (
        "你好，很高兴认识你。",
        "今天天气很好，我们去公园散步吧。",
        "请问，去火车站怎么走？",
    )),
    Language("es", "Spanish", "espeak/es", (
        "¡Hola! Mucho gusto en conocerte.",
        "Hoy hace un día perfecto para pasear por el parque.",
        "¿Me podrías decir cómo llegar a la estación de tren?",
    )),
)}

# Labels: espeak-ng voices and variants (m = male, f = female), the other engines' speakers.
_ESPEAK_NAMES = {"en-us": "US English", "en": "British English", "cmn": "Mandarin",
                 "es": "European Spanish", "es-419": "Latin American Spanish"}
_ESPEAK_VARIANTS = {"m3": "male 3", "m7": "male 7", "f2": "female 2", "f4": "female 4",
                    "klatt": "Klatt formant synthesiser"}
_SPEAKERS = {
    "festival/kal_diphone": "Kal, US male (Festival diphones)",
    "festival/ked_diphone": "Ked, US male (Festival diphones)",
    "festival/cmu_us_slt_arctic_hts": "SLT, US female (Festival HTS)",
    "flite/kal": "Kal, US male, 8 kHz (Flite)",
    "flite/kal16": "Kal, US male (Flite)",
    "flite/awb": "AWB, Scottish male (Flite)",
    "flite/rms": "RMS, US male (Flite)",
    "flite/slt": "SLT, US female (Flite)",
    "piper/en_US-joe-medium": "Joe, US male (Piper, neural)",
}


class UnknownLanguage(ValueError):
    """A language code that is not in :data:`LANGUAGES`."""


class UnknownVoice(ValueError):
    """A voice that is not one of the language's installed voices."""


class EmptyText(ValueError):
    """Nothing to say: the text is empty or only white space."""


def label(voice: Voice) -> str:
    """A short human name for ``voice`` ("US English, female 2 (eSpeak NG)")."""
    if voice.engine == "espeak":
        base, _, variant = voice.name.partition("+")
        name = _ESPEAK_NAMES.get(base, base)
        if variant:
            name += ", " + _ESPEAK_VARIANTS.get(variant, variant)
        return f"{name} (eSpeak NG)"
    return _SPEAKERS.get(voice.key, f"{voice.name} ({voice.engine})")


def language(code: str) -> Language:
    """The :class:`Language` of ``code``; :class:`UnknownLanguage` names the known ones."""
    if code not in LANGUAGES:
        known = ", ".join(f"{c} ({lang.name})" for c, lang in LANGUAGES.items())
        raise UnknownLanguage(f"unknown language {code!r}; known: {known}")
    return LANGUAGES[code]


@functools.cache
def installed(code: str) -> tuple[Voice, ...]:
    """The voices of ``code`` that can be spoken here, the default first (checked once a process)."""
    lang = language(code)
    found = [v for engine in CATALOGUE.values() for v in engine
             if v.language == code and not missing([v])]
    return tuple(sorted(found, key=lambda v: v.key != lang.default_voice))


def voice(code: str, key: str | None = None) -> Voice:
    """The installed voice ``key`` of language ``code`` (a bare name is an espeak-ng voice), or
    the language's default; :class:`UnknownLanguage` / :class:`UnknownVoice` otherwise."""
    lang = language(code)
    key = key or lang.default_voice
    if "/" not in key:
        key = f"espeak/{key}"
    voices = {v.key: v for v in installed(code)}
    if key not in voices:
        raise UnknownVoice(f"no voice {key!r} speaks {lang.name} here; voices: {', '.join(voices)}")
    return voices[key]


def describe() -> list[dict]:
    """Every language with its installed voices (``id``, ``label``) and example sentences."""
    return [{"code": lang.code, "name": lang.name, "default_voice": lang.default_voice,
             "voices": [{"id": v.key, "label": label(v)} for v in installed(lang.code)],
             "examples": list(lang.examples)} for lang in LANGUAGES.values()]


def say(text: str, code: str = "en", key: str | None = None) -> np.ndarray:
    """``text`` spoken in language ``code`` by voice ``key`` (default: the language's):
    float32 mono 16 kHz. Empty text raises :class:`EmptyText`."""
    text = text.strip()
    if not text:
        raise EmptyText("there is no text to speak")
    return np.asarray(speak(text, voice(code, key)).audio, dtype=np.float32)
