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


def test_audio_formats_clients_send_are_decoded_and_others_refused():
    from serve.audiofile import ALLOWED_TEXT
    from serve.inputs import decode_audio
    from tests.serve.hostile_media import encoded

    accepted = [("wav", "pcm_s16le", 16000), ("wav", "pcm_f32le", 8000), ("mp3", "libmp3lame", 16000),
                ("ogg", "libopus", 48000), ("flac", "flac", 16000), ("webm", "libopus", 48000),
                ("ipod", "aac", 16000), ("mp4", "aac", 44100), ("adts", "aac", 16000)]
    for fmt, codec, rate in accepted:  # 1 s each (lossy codecs pad a frame or two)
        assert abs(len(decode_audio(encoded(fmt, codec, 1.0, rate), Limits())) - 16000) < 2048, fmt
    refused = [("aiff", "pcm_s16be"), ("matroska", "flac"), ("caf", "pcm_s16le"), ("au", "pcm_s16be"),
               ("wav", "adpcm_ms")]
    for fmt, codec in refused:
        with pytest.raises(ApiError) as info:
            decode_audio(encoded(fmt, codec), Limits())
        err = info.value
        assert (err.status, err.code, err.field) == (415, "unsupported_media", "audio"), fmt
        assert ALLOWED_TEXT in err.message
    assert "Matroska (.mkv)" in status_message(decode_audio, encoded("matroska", "flac"), Limits())


def status_message(fn, *args) -> str:
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value.message


def test_an_hour_of_flac_silence_is_refused_by_its_header_or_once_decoding_passes_the_limit():
    import tracemalloc

    from serve.inputs import decode_audio
    from tests.serve.hostile_media import silent_flac

    hour, limits = silent_flac(3600), Limits(max_audio_s=60)
    assert len(hour) < 20_000  # an hour of 16 kHz silence in kilobytes (115 MB as PCM)
    with pytest.raises(ApiError) as info:
        decode_audio(hour, limits)  # STREAMINFO says 3600 s: nothing is decoded
    assert (info.value.status, info.value.code, info.value.field) == (413, "audio_too_long", "audio")
    assert "3600.0 s" in info.value.message
    undeclared = silent_flac(3600, declare=False)  # only decoding can tell
    tracemalloc.start()
    try:
        assert status(decode_audio, undeclared, limits) == (413, "audio_too_long")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    limit_bytes = 60 * 16000 * 4  # the limit's float32 samples
    assert peak < 1.5 * limit_bytes  # an hour would be 230 MB
    assert len(decode_audio(silent_flac(59.5, declare=False), limits)) == 59.5 * 16000


EPILOGUE = b"--XyZ\r\nContent-Disposition: form-data; name=\"seed\"\r\n\r\n1\r\n--XyZ--\r\n"


def asgi_post(app, path: str, headers: dict, chunks) -> tuple[int, dict, int]:
    """POST through an ASGI app with a body of ``chunks`` (no Content-Length unless in
    ``headers``): status, JSON body and the body bytes the app took from ``receive``."""
    import asyncio
    import json

    taken, sent = 0, []

    async def receive() -> dict:
        nonlocal taken
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        taken += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], json.loads(body), taken


def test_upload_bytes_are_counted_as_they_arrive():
    """413 while a chunked body streams in, long before its 200 MB: per file (naming the field)
    in a form, for the whole body otherwise; a Content-Length over the limit reads nothing."""
    from types import SimpleNamespace

    from serve.api import create_app
    from serve.config import ServeConfig

    cfg = ServeConfig(limits=Limits(max_upload_mb=1))
    app = create_app(SimpleNamespace(cfg=cfg, api_key=None, portraits=None, animator=None))
    mb, block = 1024 * 1024, b"\0" * 65536

    def endless(head: bytes = b""):
        yield head
        for _ in range(200 * 16):  # 200 MB
            yield block

    head = (b"--XyZ\r\nContent-Disposition: form-data; name=\"audio\"; filename=\"a.flac\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n")
    form = {"Content-Type": "multipart/form-data; boundary=XyZ", "Transfer-Encoding": "chunked"}
    code, body, taken = asgi_post(app, "/v1/generate", form, endless(head))
    assert (code, body["error"]["code"], body["error"]["field"]) == (413, "upload_too_large", "audio")
    assert taken < 1.2 * mb
    # an epilogue the multipart parser skips: the whole body's cap (two files and the fields)
    code, body, taken = asgi_post(app, "/v1/generate", form, endless(EPILOGUE))
    assert (code, body["error"]["code"]) == (413, "upload_too_large") and "field" not in body["error"]
    assert 2 * mb < taken < 2.2 * mb
    code, body, taken = asgi_post(app, "/v1/speech", {"Content-Type": "application/json"}, endless())
    assert (code, body["error"]["code"]) == (413, "upload_too_large") and taken <= 2 * 65536  # JSON
    declared = {**form, "Content-Length": str(200 * mb)}
    code, body, taken = asgi_post(app, "/v1/generate", declared, endless(head))
    assert (code, body["error"]["code"], taken) == (413, "upload_too_large", 0)
