"""Every speech engine (espeak-ng, festival, flite, piper) through voices.speak: 16 kHz audio, IPA
phones that the viseme table knows, timings that follow the sound, determinism, rate, errors."""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.synth import festival, neural
from disenttalk.synth.speech import SAMPLE_RATE, phonemize, synthesize
from disenttalk.synth.visemes import viseme_sequence
from disenttalk.synth.voices import (
    CATALOGUE,
    Prosody,
    Voice,
    engine_available,
    missing,
    parse_voice,
    speak,
)

TEXT = "Could you pass me the salt, please? I would like some more soup."


def _needs(engine: str):
    return pytest.mark.skipif(not engine_available(engine), reason=f"{engine} is not installed: "
                              + "; ".join(missing([CATALOGUE[engine][0]])))


VOICES = [
    pytest.param(parse_voice("espeak/en-us+f2", "en"), marks=_needs("espeak"), id="espeak"),
    pytest.param(parse_voice("festival/kal_diphone", "en"), marks=_needs("festival"), id="festival-kal"),
    pytest.param(parse_voice("festival/cmu_us_slt_arctic_hts", "en"), marks=_needs("festival"),
                 id="festival-slt-hts"),
    pytest.param(parse_voice("flite/kal", "en"), marks=_needs("flite"), id="flite-kal-8k"),
    pytest.param(parse_voice("flite/rms", "en"), marks=_needs("flite"), id="flite-rms"),
    pytest.param(parse_voice("piper/en_US-joe-medium", "en"), marks=_needs("piper"), id="piper"),
]
_CACHE: dict[Voice, object] = {}


def _spoken(voice: Voice):
    if voice not in _CACHE:
        _CACHE[voice] = speak(TEXT, voice)
    return _CACHE[voice]


@pytest.mark.parametrize("voice", VOICES)
def test_speech_is_16k_with_ordered_ipa_phones_inside_the_audio(voice):
    s = _spoken(voice)
    assert s.sample_rate == SAMPLE_RATE and s.audio.dtype == np.float32 and s.audio.ndim == 1
    # the audio ends with the last phone plus the engine's trailing silence (under a second)
    assert len(s.audio) == round(s.duration_s * SAMPLE_RATE)
    assert 0.0 <= s.duration_s - s.phonemes[-1][1] < 1.0
    assert 0.05 < np.abs(s.audio).max() <= 1.0
    ph = s.phonemes
    assert len(ph) >= 30  # ~40 phones in the sentence
    starts = np.array([p[0] for p in ph])
    ends = np.array([p[1] for p in ph])
    assert np.all(ends > starts) and np.all(starts[1:] >= ends[:-1] - 1e-9)
    assert starts[0] >= 0 and ends[-1] <= s.duration_s + 1e-9
    for _, _, ipa in ph:
        assert viseme_sequence(ipa), ipa
    symbols = {p[2].lstrip("ˈˌ") for p in ph}
    assert "p" in symbols and "s" in symbols and any(x.startswith("æ") for x in symbols)
    assert not symbols & {"pau", "hh", "ae", "sh"}
    assert s.words and s.words[0] <= ph[0][0] + 1e-9


@pytest.mark.parametrize("voice", VOICES)
def test_phones_follow_the_sound(voice):
    """Loud where the phones are, near-silent in the long pauses (before, between and after)."""
    s = _spoken(voice)
    a = s.audio.astype(np.float64)

    def rms(t0, t1):
        seg = a[int(t0 * SAMPLE_RATE):int(t1 * SAMPLE_RATE)]
        return float(np.sqrt(np.mean(seg**2))) if seg.size else 0.0

    speech = np.mean([rms(s0, s1) for s0, s1, ipa in s.phonemes if viseme_sequence(ipa)[0] in
                      ("a", "e", "i", "o", "u", "schwa")])
    bounds = [(0.0, 0.0), *[(p[0], p[1]) for p in s.phonemes], (s.duration_s, s.duration_s)]
    gaps = [(e0, s1) for (_, e0), (s1, _) in zip(bounds, bounds[1:], strict=False) if s1 - e0 > 0.12]
    assert gaps, "no pause longer than 120 ms"
    for e0, s1 in gaps:  # 30 ms margins: voicing dies away and starts up around the boundary
        assert rms(e0 + 0.03, s1 - 0.03) < 0.2 * speech, (e0, s1)


@pytest.mark.parametrize("voice", [v for v in VOICES if v.id != "espeak"])
def test_same_input_same_samples(voice):
    v = voice
    again = speak(TEXT, v)
    assert again.audio.tobytes() == _spoken(v).audio.tobytes()
    assert again.phonemes == _spoken(v).phonemes


@pytest.mark.parametrize("voice", [v for v in VOICES if v.id in ("festival-kal", "flite-rms", "piper", "espeak")])
def test_rate_changes_the_duration(voice):
    v = voice
    fast = speak("Let's meet at the station at noon.", v, Prosody(rate=1.5))
    slow = speak("Let's meet at the station at noon.", v, Prosody(rate=0.8))
    assert fast.duration_s < 0.75 * slow.duration_s
    assert fast.phonemes[-1][1] < 0.75 * slow.phonemes[-1][1]


@_needs("piper")
def test_piper_seed_changes_the_voice_but_not_the_text():
    a = speak("Hello there.", CATALOGUE["piper"][0], seed=0)
    b = speak("Hello there.", CATALOGUE["piper"][0], seed=1)
    assert a.audio.tobytes() != b.audio.tobytes()
    assert [p for *_, p in a.phonemes] == [p for *_, p in b.phonemes]


@_needs("festival")
def test_festival_pitch_moves_f0_and_quotes_are_safe():
    low = speak('He said "no\\" (twice).', parse_voice("festival/kal_diphone", "en"), Prosody(pitch=20))
    high = speak('He said "no\\" (twice).', parse_voice("festival/kal_diphone", "en"), Prosody(pitch=80))
    assert [p for *_, p in low.phonemes] == [p for *_, p in high.phonemes]

    def crossings(s):  # zero crossings per voiced second: a rough f0
        x = s.audio[int(s.phonemes[0][0] * SAMPLE_RATE):int(s.phonemes[-1][1] * SAMPLE_RATE)]
        return np.mean(np.abs(np.diff(np.sign(x))) > 0)

    assert crossings(high) != crossings(low)


def test_espeak_voice_is_synthesize_at_175_wpm():
    s = speak("Good morning.", Voice("espeak", "en-us", "en"))
    ref = synthesize("Good morning.", "en-us", rate_wpm=175)
    assert s.audio.tobytes() == ref.audio.tobytes() and s.phonemes == ref.phonemes


def test_phonemize_keeps_clause_punctuation():
    assert phonemize("Hello world, how are you?") == "həlˈoʊ wˈɜːld, hˈaʊ ɑːɹ juː?"


def test_arpabet_table_maps_into_visemes():
    for name, ipa in festival.ARPABET_IPA.items():
        assert viseme_sequence(ipa), name
    assert festival.ipa("pau") is None and festival.ipa("AE1") == "æ"
    with pytest.raises(ValueError, match="unknown CMU phone"):
        festival.ipa("xx")


def test_piper_tokens_become_phones():
    # ^ _ h _ ˈ _ a _ ɪ _ , _ ' ' _ b _ ' ' _ m _ $ : stress joins the vowel, "aɪ" is one phone,
    # the pads join their phoneme, the comma is silence, a space between words belongs to the
    # phone before it (no pause) but one after the comma stays silence.
    symbols = ["^", "_", "h", "_", "ˈ", "_", "a", "_", "ɪ", "_", "ː", "_", ",", "_", " ", "_",
               "b", "_", " ", "_", "m", "_", "$"]
    frames = np.array([2, 1, 3, 1, 1, 1, 4, 1, 2, 1, 1, 1, 5, 1, 1, 1, 3, 1, 1, 1, 2, 1, 6], float)
    out = neural.phones(symbols, frames, neural.HOP)  # rate = HOP: one frame = 1 s
    assert [(s, e, p, w) for s, e, p, w in out] == [
        (3.0, 7.0, "h", True), (7.0, 19.0, "ˈaɪː", False), (27.0, 33.0, "b", True),
        (33.0, 36.0, "m", True)]


def test_unknown_voices_are_clear_value_errors():
    with pytest.raises(ValueError, match="unknown festival voice"):
        parse_voice("festival/nobody", "en")
    with pytest.raises(ValueError, match="unknown speech engine"):
        parse_voice("mbrola/us1", "en")
    with pytest.raises(ValueError, match="speaks 'en'"):
        parse_voice("flite/slt", "zh")
    assert parse_voice("en-us+m3", "en") == Voice("espeak", "en-us+m3", "en")
    with pytest.raises(ValueError, match="unknown flite voice"):
        speak("Hi.", Voice("flite", "nobody", "en"))
    with pytest.raises(ValueError, match="no Piper voice"):
        speak("Hi.", Voice("piper", "nobody", "en"))
    with pytest.raises(ValueError, match="espeak-ng has no voice"):
        speak("Hi.", Voice("espeak", "xx-nowhere", "en"))
    assert "unknown festival voice" in missing([Voice("festival", "nobody", "en")])[0]


def test_catalogue_has_male_and_female_espeak_voices_per_language():
    espeak = CATALOGUE["espeak"]
    for lang in ("en", "zh", "es"):
        names = [v.name for v in espeak if v.language == lang]
        assert any("+m" in n for n in names) and any("+f" in n for n in names), lang
    assert all(parse_voice(v.key, v.language) == v for vs in CATALOGUE.values() for v in vs)
    assert missing([v for vs in CATALOGUE.values() for v in vs
                    if engine_available(v.engine)]) == []
