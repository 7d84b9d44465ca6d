"""Request payload decoding without a server: limits, media errors, PCM16, frame messages."""

from __future__ import annotations

import io

import numpy as np
import pytest

from serve.config import Limits
from serve.errors import ApiError, as_api_error
from tests.serve.conftest import png_bytes, wav_bytes


def status(fn, *args) -> tuple[int, str]:
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value.status, info.value.code


def test_images_limits_and_orientation(astronaut):
    from PIL import Image

    from serve.inputs import decode_image

    limits = Limits(max_upload_mb=1.0, max_image_pixels=200_000, min_image_side=64)
    assert decode_image(png_bytes(astronaut), Limits()).shape == (512, 512, 3)
    assert decode_image(png_bytes(astronaut), Limits(), max_side=256).shape == (256, 256, 3)
    assert status(decode_image, b"GIF89a-not-really", limits) == (415, "unsupported_media")
    assert status(decode_image, b"", limits) == (400, "empty_upload")
    assert status(decode_image, png_bytes(astronaut), limits) == (413, "image_too_large")
    assert status(decode_image, png_bytes(astronaut[:40, :40].copy()), limits) == (422, "image_too_small")
    noisy = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    assert status(decode_image, png_bytes(noisy), Limits(max_upload_mb=1.0)) == (413, "upload_too_large")
    # a phone photo stored sideways with an EXIF orientation tag comes out upright
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(np.ascontiguousarray(np.rot90(astronaut))).save(buf, format="JPEG", exif=exif)
    upright = decode_image(buf.getvalue(), Limits())
    assert upright.shape == (512, 512, 3)
    assert np.abs(upright.astype(int) - astronaut).mean() < 12  # JPEG noise, not a turned photo


def test_audio_decoding_and_limits():
    from serve.inputs import decode_audio

    tone = (0.3 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    assert len(decode_audio(wav_bytes(tone, 8000), Limits())) == 16000  # resampled to 16 kHz
    assert status(decode_audio, b"RIFF....WAVEjunk", Limits()) == (415, "unsupported_media")
    assert status(decode_audio, wav_bytes(np.zeros(16000 * 3, np.float32)), Limits(max_audio_s=2)) \
        == (413, "audio_too_long")


def test_pcm16_and_frame_messages():
    from serve.inputs import pcm16
    from serve.stream import pack_frame, unpack_frame

    stereo = np.array([[1000, 3000], [-2000, -4000]], dtype="<i2").tobytes()
    np.testing.assert_allclose(pcm16(stereo, 2), [2000 / 32768, -3000 / 32768])
    assert status(pcm16, b"\x00\x00\x00", 1) == (400, "bad_audio_chunk")
    header = {"type": "frame", "index": 7, "t": 0.28, "audio": [4480, 5120]}
    assert unpack_frame(pack_frame(header, b"\xff\xd8jpeg")) == (header, b"\xff\xd8jpeg")


def test_api_errors_survive_pickling_and_wrapping():
    import pickle

    err = pickle.loads(pickle.dumps(ApiError(422, "no_face", "no face found")))
    assert (err.status, err.code, err.body()) == (422, "no_face", {"error": {"code": "no_face",
                                                                             "message": "no face found"}})

    class Wrapper(Exception):
        def __init__(self, cause):
            super().__init__(str(cause))
            self.cause = cause

    assert as_api_error(Wrapper(err)) is err and as_api_error(ValueError("x")) is None
    named = pickle.loads(pickle.dumps(ApiError(422, "unknown_voice", "no such voice", field="voice")))
    assert named.field == "voice" and named.body()["error"] == {
        "code": "unknown_voice", "message": "no such voice", "field": "voice"}
    assert as_api_error(Wrapper(named)).field == "voice"


def test_text_to_speech_limits_and_errors_name_their_field():
    import wave

    from serve.speech import check, speak, voices, wav

    def error(*args) -> tuple[int, str, str | None]:
        with pytest.raises(ApiError) as info:
            speak(*args)
        return info.value.status, info.value.code, info.value.field

    limits = Limits(max_text_chars=40, max_audio_s=2.0)
    assert check("  Hello there.\n", "en", None, limits) == "Hello there."
    assert error(" \t", "en", None, limits) == (400, "empty_text", "text")
    assert error("x" * 41, "en", None, limits) == (413, "text_too_long", "text")
    assert error("Bonjour", "fr", None, limits) == (422, "unknown_language", "language")
    assert error("Hello", "en", "espeak/es", limits) == (422, "unknown_voice", "voice")
    assert error("one two three four five six seven eight", "en", None, limits) \
        == (413, "audio_too_long", "text")
    audio = speak("你好", "zh", "espeak/cmn+f2", limits)
    with wave.open(io.BytesIO(wav(audio))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (16000, 1, 2, len(audio))
    listing = voices(limits)
    assert listing["max_text_chars"] == 40 and [lang["code"] for lang in listing["languages"]] == ["en", "zh", "es"]
