"""Text-to-speech with phoneme timings: libespeak-ng (from the ``espeakng-loader`` wheel) via ctypes.

espeak-ng is initialised in synchronous mode with phoneme events in IPA, so the synthesis
callback receives both the 22.05 kHz samples and one ``espeakEVENT_PHONEME`` per phoneme with
its audio position; audio is resampled to 16 kHz mono. The library's state is process-global,
so calls are serialised by a lock. It also keeps state that ``espeak_Terminate`` does not reset
(a function-static pitch-flutter phase and gain control in its wave generator), which made the
same sentence come out a few samples different depending on what was spoken before; every call
therefore loads the library afresh (``dlopen``), seeds its noise (``espeak_ng_SetRandSeed``),
speaks, and unloads it again (``dlclose``, ~25 ms), so the audio and phoneme times depend only
on (text, voice, rate, pitch, range).

Voices: English ``en-us``; Spanish ``es``; Mandarin ``cmn``. In the shipped espeak-ng 1.52 both
``cmn`` and ``cmn-latn-pinyin`` load the same ``cmn`` dictionary and read Chinese characters as
Mandarin syllables with tones (checked by the phonemes they emit, see
``tests/unit/test_synth_speech.py``); the 1.51 misreading of characters by ``cmn`` is gone, so
the corpus writes Mandarin sentences in characters and uses ``cmn``.
"""

from __future__ import annotations

import ctypes
import re
import threading
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from disenttalk.constants import SAMPLE_RATE

ESPEAK_RATE = 22_050  # espeak-ng's native rate

VOICES = {"en": "en-us", "zh": "cmn", "es": "es"}  # ISO 639-1 → espeak-ng voice

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02  # espeak_TextToPhonemes: IPA, no tie characters
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms from the start of the message
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Speech:
    """Synthesised utterance: 16 kHz mono float32 audio and IPA phonemes with start/end times (s)."""

    audio: np.ndarray  # [S] float32 in [-1, 1]
    phonemes: tuple[tuple[float, float, str], ...]  # (start_s, end_s, ipa)
    words: tuple[float, ...]  # word onsets (s)
    sample_rate: int = SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / self.sample_rate


class _Engine:
    """A freshly loaded and initialised libespeak-ng (one at a time: its state is global)."""

    def __init__(self) -> None:
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        self.lib.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int,
        ]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        path = espeakng_loader.get_data_path().encode()
        opts = _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, path, opts)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"espeak_Initialize failed or unexpected rate ({rate})")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, str]] = []  # (type, ms, name)
        self._callback = _CALLBACK(self._on_synth)  # kept alive: the library holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav, num_samples, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type in (_EVENT_PHONEME, _EVENT_WORD, _EVENT_END):
                name = ev.id.string.decode("utf-8", "replace") if ev.type == _EVENT_PHONEME else ""
                self._events.append((ev.type, ev.audio_position, name))
            i += 1
        return 0  # keep synthesising

    def synth(self, text: str, voice: str, rate_wpm: int, pitch: int, pitch_range: int, seed: int = 0):
        """Raw 22.05 kHz int16 samples and the (type, ms, name) events of one utterance."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((_PARAM_RATE, rate_wpm), (_PARAM_PITCH, pitch),
                             (_PARAM_RANGE, pitch_range), (_PARAM_VOLUME, 100)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self._chunks, self._events = [], []
        # espeak-ng draws random noise and timing jitter; a fixed seed per call makes the
        # audio a function of (text, voice, prosody) alone, whatever was spoken before.
        self.lib.espeak_ng_SetRandSeed(seed)
        data = text.encode("utf-8") + b"\0"
        err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with code {err}")
        self.lib.espeak_Synchronize()
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return samples, list(self._events)

    def text_to_phonemes(self, text: str, voice: str) -> list[str]:
        """IPA phonemes of each clause espeak-ng finds in ``text`` (words separated by spaces)."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        buf = ctypes.create_string_buffer(text.encode("utf-8") + b"\0")
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        clauses = []
        while ptr.value:
            out = self.lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, _PHONEMES_IPA)
            if out:
                clauses.append(out.decode("utf-8", "replace").strip())
        return [c for c in clauses if c]

    def close(self) -> None:
        """Terminate and unload the library, so the next load starts from clean static state."""
        import _ctypes

        self.lib.espeak_Terminate()
        _ctypes.dlclose(self.lib._handle)


_LOCK = threading.Lock()
_CLAUSE = re.compile(r"([^,.;:!?]*)([,.;:!?]*)")


def phonemize(text: str, voice: str = "en-us") -> str:
    """IPA of ``text`` as Piper voices read it: clauses joined by spaces, their punctuation kept.

    espeak-ng's ``espeak_TextToPhonemes`` drops the punctuation that ends a clause, so the text is
    split on ``, . ; : ! ?`` here, each clause is phonemised alone and its first punctuation mark
    is appended (``"həlˈoʊ, wˈɜːld."``).
    """
    parts = [(c.strip(), p[:1]) for c, p in _CLAUSE.findall(text) if c.strip() or p]
    with _LOCK:
        engine = _Engine()
        try:
            out = []
            for clause, punct in parts:
                ipa = " ".join(engine.text_to_phonemes(clause, voice)) if clause else ""
                if ipa or out:
                    out.append(ipa + punct)
        finally:
            engine.close()
    return " ".join(o for o in out if o)


def synthesize(
    text: str, language: str = "en", rate_wpm: int = 160, pitch: int = 50, pitch_range: int = 50
) -> Speech:
    """Speak ``text`` in ``language`` (ISO 639-1 key of VOICES, or an espeak-ng voice name)."""
    voice = VOICES.get(language, language)
    with _LOCK:
        engine = _Engine()
        try:
            raw, events = engine.synth(text, voice, rate_wpm, pitch, pitch_range)
        finally:
            engine.close()
    audio = resample_poly(raw.astype(np.float32) / 32768.0, 320, 441).astype(np.float32)  # 22050→16000
    duration = len(audio) / SAMPLE_RATE
    # A phoneme lasts until the next phoneme (or the end of the message).
    marks = [(ms / 1000.0, name) for typ, ms, name in events if typ == _EVENT_PHONEME]
    end = max([ms / 1000.0 for typ, ms, _ in events if typ == _EVENT_END] + [duration])
    phonemes = []
    for k, (t, name) in enumerate(marks):
        t_next = marks[k + 1][0] if k + 1 < len(marks) else min(end, duration)
        if name.strip() and t_next > t:
            phonemes.append((t, min(t_next, duration), name))
    words = tuple(ms / 1000.0 for typ, ms, _ in events if typ == _EVENT_WORD)
    return Speech(audio=audio, phonemes=tuple(phonemes), words=words)
