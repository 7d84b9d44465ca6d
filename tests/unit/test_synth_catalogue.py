"""Typed text to speech: the languages, voices and examples of disenttalk.synth.catalogue, and
``disenttalk generate --text`` speaking through them."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from disenttalk.constants import SAMPLE_RATE
from disenttalk.synth import catalogue, voices

CJK = re.compile(r"[\u4e00-\u9fff]")


def test_each_language_has_a_name_an_installed_default_voice_and_examples_in_its_own_script():
    described = {lang["code"]: lang for lang in catalogue.describe()}
    assert list(described) == ["en", "zh", "es"]
    assert [described[c]["name"] for c in described] == ["English", "Chinese (Mandarin)", "Spanish"]
    for code, lang in described.items():
        ids = [v["id"] for v in lang["voices"]]
        assert ids[0] == lang["default_voice"] and lang["default_voice"].startswith("espeak/")
        assert len(set(ids)) == len(ids) and all(v["label"] for v in lang["voices"])
        assert all(voices.missing([v]) == [] for v in catalogue.installed(code))
        assert len(lang["examples"]) == 3 and all(10 <= len(e) <= 80 for e in lang["examples"])
    assert all(CJK.search(e) and not re.search("[A-Za-z]", e) for e in described["zh"]["examples"])
    assert all(re.search("[¡¿áéíóúñ]", e) for e in described["es"]["examples"])
    assert "US English, female 2 (eSpeak NG)" in [v["label"] for v in described["en"]["voices"]]


@pytest.mark.parametrize("code", ["en", "zh", "es"])
def test_an_example_is_spoken_at_16_khz_for_a_plausible_time(code):
    text = catalogue.LANGUAGES[code].examples[1]
    audio = catalogue.say(f"  {text}\n", code)
    assert audio.dtype == np.float32 and audio.ndim == 1
    default = voices.parse_voice(catalogue.LANGUAGES[code].default_voice, code)
    np.testing.assert_array_equal(audio, voices.speak(text, default).audio)  # stripped, default voice
    assert np.abs(audio).max() > 0.1  # speech, not silence
    variant = catalogue.say(text, code, catalogue.installed(code)[1].key)
    assert not np.array_equal(variant[:len(audio)], audio[:len(variant)])  # another voice


def test_unknown_languages_and_voices_and_empty_text_are_refused_saying_why():
    with pytest.raises(catalogue.UnknownLanguage, match=r"'fr'; known: en \(English\), zh"):
        catalogue.voice("fr")
    with pytest.raises(catalogue.UnknownVoice, match="no voice 'espeak/cmn' speaks English"):
        catalogue.voice("en", "espeak/cmn")
    with pytest.raises(catalogue.UnknownVoice):
        catalogue.voice("zh", "festival/kal_diphone")  # an English voice
    assert catalogue.voice("en", "en-us+f2").key == "espeak/en-us+f2"  # a bare name is espeak's
    with pytest.raises(catalogue.EmptyText):
        catalogue.say(" \n\t", "en")


def test_generate_speaks_text_and_wants_exactly_one_of_audio_and_text(tmp_path, monkeypatch):
    """``disenttalk generate --text`` (the CLI, a tiny stand-in model): the video lasts as long
    as the spoken text; --audio with --text, or neither, ends with a one-line error."""
    from PIL import Image
    from typer.testing import CliRunner

    import disenttalk.generate
    import workflows.register
    from disenttalk import media
    from disenttalk.face.portrait import prepare_portrait
    from tests import tight
    from tests.unit.test_tight_crops import generator_for
    from workflows.cli import app

    photo = tight.aligned_112("cage")
    Image.fromarray(photo).save(tmp_path / "avatar.png")
    gen = generator_for(prepare_portrait(photo).landmarks)
    monkeypatch.setattr(workflows.register, "resolve_bundle", lambda uri: uri)
    monkeypatch.setattr(disenttalk.generate.Generator, "from_bundle", classmethod(lambda cls, path, **kw: gen))
    runner = CliRunner()
    base = ["generate", "--model", "tiny", "--image", str(tmp_path / "avatar.png"), "--steps", "2"]
    text = "Hola, ¿qué tal?"
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "talk.mp4"), "--text", text,
                                 "--language", "es", "--voice", "espeak/es+f2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    seconds = len(catalogue.say(text, "es", "espeak/es+f2")) / SAMPLE_RATE
    assert summary["voice"] == "espeak/es+f2" and summary["seconds_of_audio"] == pytest.approx(seconds, abs=1e-3)
    assert summary["frames"] == int(np.ceil(seconds * 25))
    assert len(media.read_audio(tmp_path / "talk.mp4")) / SAMPLE_RATE == pytest.approx(seconds, abs=0.05)
    for extra, message in ((["--text", "hi", "--audio", "a.wav"], "not both"),
                           ([], "give --audio (a speech file) or --text"),
                           (["--text", "hi", "--language", "fr"], "unknown language 'fr'"),
                           (["--text", " "], "--text is empty"),
                           (["--text", "hi", "--voice", "espeak/es"], "no voice 'espeak/es' speaks English")):
        refused = runner.invoke(app, [*base, "--out", str(tmp_path / "no.mp4"), *extra])
        assert refused.exit_code == 2 and message in refused.stderr, refused.output
        assert not (tmp_path / "no.mp4").exists()
