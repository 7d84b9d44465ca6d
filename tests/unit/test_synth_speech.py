"""espeak-ng speech through ctypes: audio, phoneme events and voices (the wheel's library, offline)."""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.synth.speech import SAMPLE_RATE, synthesize


@pytest.fixture(scope="module")
def english():
    return synthesize("Could you pass me the salt, please?", "en")


def test_audio_is_16k_mono_and_audible(english):
    assert english.sample_rate == SAMPLE_RATE
    assert english.audio.ndim == 1 and english.audio.dtype == np.float32
    assert 0.8 < english.duration_s < 4.0
    assert 0.05 < np.abs(english.audio).max() <= 1.5


def test_phoneme_events_present_ordered_and_inside_the_audio(english):
    ph = english.phonemes
    assert len(ph) >= 15  # ~20 phonemes in this sentence
    starts = np.array([p[0] for p in ph])
    ends = np.array([p[1] for p in ph])
    assert np.all(np.diff(starts) > 0)
    assert np.all(ends > starts)
    assert starts[0] >= 0.0 and ends[-1] <= english.duration_s + 1e-6
    symbols = [p[2] for p in ph]
    # IPA, not espeak's ASCII mnemonics: "pass" gives p + stressed æ, "please" ends in z.
    assert "p" in symbols and any("æ" in s for s in symbols) and symbols[-1] == "z"


def test_phoneme_times_follow_the_sound(english):
    """Samples are louder inside the phonemes than in the silence after the last one ends."""
    a = np.abs(english.audio)
    first, last = english.phonemes[0][0], english.phonemes[-1][1]
    inside = a[int(first * SAMPLE_RATE):int(last * SAMPLE_RATE)]
    assert inside.mean() > 0.02
    tail = a[int((last + 0.02) * SAMPLE_RATE):]
    assert tail.size == 0 or tail.mean() < 0.2 * inside.mean()


def test_chinese_characters_are_read_as_mandarin():
    """我今天很高兴 → w o tɕ i n th iɛ n … ɕ i ŋ: Mandarin syllables, not letter names."""
    speech = synthesize("我今天很高兴。", "zh")
    symbols = [p[2].lstrip("ˈˌ") for p in speech.phonemes]
    assert "tɕ" in symbols and "ɕ" in symbols and symbols[-1] == "ŋ"
    assert 8 <= len(symbols) <= 24  # six syllables


def test_speakers_differ_in_rate_and_pitch():
    slow = synthesize("Let's meet at the station at noon.", "en", rate_wpm=140, pitch=30)
    fast = synthesize("Let's meet at the station at noon.", "en", rate_wpm=185, pitch=70)
    assert fast.duration_s < 0.9 * slow.duration_s
    assert not np.array_equal(slow.audio[:1000], fast.audio[:1000])


def test_same_call_same_audio_and_settings_do_not_leak():
    a = synthesize("Hoy hace mucho calor.", "es")
    synthesize("Hoy hace mucho calor.", "es", rate_wpm=180, pitch=80)
    b = synthesize("Hoy hace mucho calor.", "es")
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.phonemes == b.phonemes


def test_unknown_voice_is_an_error():
    with pytest.raises(ValueError):
        synthesize("hello", "no-such-voice")
