"""The app over real HTTP and a real WebSocket: generation, streaming, bad inputs, overload, reload."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
import requests

from tests.serve.conftest import MODEL, SR, png_bytes, wav_bytes

pytestmark = pytest.mark.ray
TIMEOUT = 120


def generate(server, audio: bytes, image: bytes | None = None, **fields):
    files = {"audio": ("speech.wav", audio)}
    if image is not None:
        files["image"] = ("photo.png", image)
    return requests.post(f"{server}/v1/generate", files=files, data={k: str(v) for k, v in fields.items()},
                         timeout=TIMEOUT)


def error_of(response) -> tuple[int, str, str]:
    body = response.json()["error"]
    assert body["message"]
    return response.status_code, body["code"], body["message"]


@pytest.fixture(scope="module")
def portrait(server, portrait_png) -> dict:
    r = requests.post(f"{server}/v1/portraits", files={"image": ("a.png", portrait_png)}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def test_health_model_and_page(server, registered):
    assert requests.get(f"{server}/healthz", timeout=10).json() == {"status": "ok"}
    info = requests.get(f"{server}/v1/model", timeout=10).json()
    assert info["name"] == MODEL and info["alias"] == "champion" and info["version"] == registered[0]
    assert info["run_id"] and info["stream_window"]["hop"] == 8
    page = requests.get(f"{server}/", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/v1/stream" in requests.get(f"{server}/web/app.js", timeout=10).text


def test_portrait_is_prepared_once_and_says_where_the_face_is(server, portrait, portrait_png):
    assert len(portrait["portrait_id"]) == 64 and portrait["image_size"] == [512, 512]
    x, y, w, h = portrait["face_box"]
    assert 150 < x < x + w < 300 and 40 < y < y + h < 220  # the astronaut's face
    assert portrait["face"] == 0 and len(portrait["faces"]) == 1
    t = time.perf_counter()
    again = requests.post(f"{server}/v1/portraits", files={"image": ("b.png", portrait_png)}, timeout=TIMEOUT)
    assert again.json() == portrait and time.perf_counter() - t < 5  # cached by content hash


def test_group_photo_animates_the_largest_face_or_the_one_asked_for(server, astronaut):
    small = np.pad(astronaut[::2, ::2], ((128, 128), (0, 0), (0, 0)))
    group = png_bytes(np.ascontiguousarray(np.concatenate([astronaut, small, astronaut[:, ::-1]], 1)))
    default = requests.post(f"{server}/v1/portraits", files={"image": ("g.png", group)}, timeout=TIMEOUT).json()
    assert len(default["faces"]) >= 2, default
    widths = [f["box"][2] for f in default["faces"]]
    assert default["face_box"][2] == max(widths)
    other = requests.post(f"{server}/v1/portraits", files={"image": ("g.png", group)},
                          data={"face": str(len(widths) - 1)}, timeout=TIMEOUT).json()
    assert other["face"] == len(widths) - 1 and other["portrait_id"] != default["portrait_id"]
    assert other["face_box"] == default["faces"][-1]["box"]


def test_tight_crops_animate_and_a_mouth_outside_the_photo_is_refused(server, speech):
    """An aligned 112 px face and a photo with the forehead cut off are prepared and animated at
    the photo's size; a photo cut under the nose is refused, saying the mouth is outside."""
    import av

    from tests import tight

    for photo in (tight.aligned_112("cage"), tight.forehead_cut("audrey")):
        r = requests.post(f"{server}/v1/portraits", files={"image": ("t.png", png_bytes(photo))}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        found = r.json()
        h, w = photo.shape[:2]
        assert found["image_size"] == [w, h] and found["faces"][found["face"]]["usable"]
        if h > 112:  # the forehead cut off: the face box hangs above the photo
            assert found["face_box"][1] < 0
        video = generate(server, wav_bytes(speech), portrait_id=found["portrait_id"])
        assert video.status_code == 200, video.text
        with av.open(io.BytesIO(video.content)) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == (w + w % 2, h + h % 2)  # the photo (even sides)
            assert sum(1 for _ in container.decode(stream)) == int(video.headers["x-frames"])
    refused = requests.post(f"{server}/v1/portraits",
                            files={"image": ("n.png", png_bytes(tight.below_nose("cage")))}, timeout=TIMEOUT)
    status, code, message = error_of(refused)
    assert (status, code) == (422, "face_cut_off") and "its mouth is outside the photo" in message


def test_generate_returns_a_playable_mp4_with_audio(server, portrait_png, speech):
    import av

    r = generate(server, wav_bytes(speech), portrait_png)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4"
    expected = int(np.ceil(len(speech) / SR * 25))
    assert int(r.headers["x-frames"]) == expected
    with av.open(io.BytesIO(r.content)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
        assert (video.width, video.height) == (512, 512)  # pasted back into the photo
        assert audio.sample_rate == SR
    assert len(frames) == expected


def test_generate_by_portrait_id_crop_and_motion(server, portrait, speech):
    pid = portrait["portrait_id"]
    crop = generate(server, wav_bytes(speech), portrait_id=pid, crop_only="true")
    assert crop.status_code == 200 and crop.headers["x-portrait-id"] == pid
    motion = generate(server, wav_bytes(speech), portrait_id=pid, output="motion", seed=3)
    body = motion.json()
    assert motion.headers["content-type"] == "application/json"
    assert len(body["expression"]) == len(body["pose"]) == body["frames"] == int(crop.headers["x-frames"])
    npz = generate(server, wav_bytes(speech), portrait_id=pid, output="npz", seed=3)
    arrays = np.load(io.BytesIO(npz.content))
    np.testing.assert_allclose(arrays["expression"], np.array(body["expression"]), rtol=1e-5, atol=1e-6)


def test_audio_of_any_rate_and_layout_and_silence(server, portrait, speech):
    from scipy.signal import resample_poly

    pid = portrait["portrait_id"]
    for rate, channels in [(44100, 2), (8000, 1)]:
        audio = resample_poly(speech, rate, SR).astype(np.float32)
        r = generate(server, wav_bytes(audio, rate, channels), portrait_id=pid, output="motion")
        assert r.status_code == 200, r.text
        assert abs(r.json()["frames"] - len(speech) / SR * 25) <= 1
    silent = generate(server, wav_bytes(np.zeros(SR, np.float32)), portrait_id=pid, output="motion")
    assert silent.status_code == 200 and silent.json()["frames"] == 25  # a still face, not an error


def test_bad_inputs_get_their_status_and_a_message(server, portrait, speech, astronaut):
    from PIL import Image

    pid, wav = portrait["portrait_id"], wav_bytes(speech)
    rng = np.random.default_rng(0)
    junk = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    gradient = np.repeat(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], 256, 0).repeat(3, 2)
    huge = io.BytesIO()
    Image.new("1", (7000, 7000)).save(huge, format="PNG")  # 49 MP in a few kB
    cases = {
        "not an image": (generate(server, wav, junk), 415, "unsupported_media"),
        "no face": (generate(server, wav, png_bytes(gradient)), 422, "no_face"),
        "tiny image": (generate(server, wav, png_bytes(astronaut[::16, ::16].copy())), 422, "image_too_small"),
        "huge image": (generate(server, wav, huge.getvalue()), 413, "image_too_large"),
        "upside down": (generate(server, wav, png_bytes(astronaut[::-1, ::-1].copy())), 422, "face_rotated"),
        "face too small": (generate(server, wav, png_bytes(astronaut[::6, ::6].copy())), 422, "face_too_small"),
        "no such face": (generate(server, wav, png_bytes(astronaut), face=3), 422, "bad_face_index"),
        "over the size limit": (generate(server, junk * 800, portrait_id=pid), 413, "upload_too_large"),
        "undecodable audio": (generate(server, junk, portrait_id=pid), 415, "unsupported_media"),
        "audio too long": (generate(server, wav_bytes(np.zeros(9 * SR, np.float32)), portrait_id=pid), 413,
                           "audio_too_long"),
        "bad option": (generate(server, wav, portrait_id=pid, lip_scale="lots"), 422, "invalid_option"),
        "option out of range": (generate(server, wav, portrait_id=pid, steps=1000), 422, "invalid_option"),
        "blink rate out of range": (generate(server, wav, portrait_id=pid, blink_rate=4), 422, "invalid_option"),
        "unknown option": (generate(server, wav, portrait_id=pid, volume=3), 422, "invalid_option"),
        "unknown portrait": (generate(server, wav, portrait_id="0" * 64), 404, "unknown_portrait"),
        "malformed portrait id": (generate(server, wav, portrait_id="../../etc/passwd"), 422, "invalid_option"),
        "no image": (generate(server, wav), 400, "missing_field"),
        "no audio": (requests.post(f"{server}/v1/generate", data={"portrait_id": pid}, files={"x": ("x", b"1")},
                                   timeout=TIMEOUT), 400, "missing_field"),
        "json body": (requests.post(f"{server}/v1/generate", json={"audio": "x"}, timeout=TIMEOUT), 415,
                      "unsupported_media"),
        "wrong method": (requests.get(f"{server}/v1/generate", timeout=TIMEOUT), 405, "method_not_allowed"),
        "no route": (requests.get(f"{server}/v1/nothing", timeout=TIMEOUT), 404, "not_found"),
    }
    for name, (response, status, code) in cases.items():
        assert error_of(response)[:2] == (status, code), (name, response.text)
    assert requests.get(f"{server}/healthz", timeout=10).status_code == 200  # still serving


def spoken(server, text: str, **fields) -> requests.Response:
    return requests.post(f"{server}/v1/speech", json={"text": text, **fields}, timeout=TIMEOUT)


def test_voices_and_example_photos_are_listed(server):
    from PIL import Image

    voices = requests.get(f"{server}/v1/voices", timeout=30).json()
    assert voices["max_text_chars"] == 400
    languages = {lang["code"]: lang for lang in voices["languages"]}
    assert list(languages) == ["en", "zh", "es"]
    for code, default in (("en", "espeak/en-us"), ("zh", "espeak/cmn"), ("es", "espeak/es")):
        lang = languages[code]
        assert lang["name"] and lang["default_voice"] == default and len(lang["examples"]) == 3
        assert lang["voices"][0]["id"] == default and all(v["label"] for v in lang["voices"])
    photos = {p["id"]: p for p in requests.get(f"{server}/v1/examples", timeout=30).json()["photos"]}
    astronaut = photos["astronaut"]
    assert astronaut["licence"] == "public domain" and "NASA" in astronaut["source"]
    assert astronaut["url"] == "v1/examples/astronaut.jpg"
    r = requests.get(f"{server}/{astronaut['url']}", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (512, 512)
    assert error_of(requests.get(f"{server}/v1/examples/nobody.jpg", timeout=30))[:2] == (404, "not_found")


def test_speech_is_a_16_khz_wav_of_the_text_in_each_language(server):
    import wave

    voices = {lang["code"]: lang for lang in requests.get(f"{server}/v1/voices", timeout=30).json()["languages"]}
    for code, lang in voices.items():
        for voice in (None, lang["voices"][-1]["id"]):
            r = spoken(server, lang["examples"][0], language=code, voice=voice)
            assert r.status_code == 200 and r.headers["content-type"] == "audio/wav", r.text
            assert r.headers["x-voice"] == (voice or lang["default_voice"])
            with wave.open(io.BytesIO(r.content)) as w:
                assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR, 1, 2)
                seconds = w.getnframes() / SR
            assert 0.8 < seconds < 6.0 and abs(seconds - float(r.headers["x-seconds"])) < 1e-3, (code, voice)


def test_generate_speaks_text_in_each_language(server, portrait):
    """A text request is spoken (the language's default voice) and animated: the video lasts as
    long as X-Seconds says; the first one uses the example astronaut photo."""
    import av

    voices = {lang["code"]: lang for lang in requests.get(f"{server}/v1/voices", timeout=30).json()["languages"]}
    photo = requests.get(f"{server}/v1/examples/astronaut.jpg", timeout=30).content
    for k, code in enumerate(("en", "zh", "es")):
        fields = {"text": voices[code]["examples"][1], "language": code, "crop_only": "true"}
        files = {"image": ("astronaut.jpg", photo)} if k == 0 else None
        if files is None:
            fields["portrait_id"] = portrait["portrait_id"]
        r = requests.post(f"{server}/v1/generate", files=files or {"x": ("x", b"1")}, data=fields,
                          timeout=TIMEOUT)
        assert r.status_code == 200 and r.headers["content-type"] == "video/mp4", r.text
        seconds = float(r.headers["x-seconds"])
        assert r.headers["x-voice"] == voices[code]["default_voice"] and 1.0 < seconds < 8.0
        assert int(r.headers["x-frames"]) == int(np.ceil(seconds * 25))
        with av.open(io.BytesIO(r.content)) as container:
            assert abs(container.duration / av.time_base - seconds) < 0.1, code
            assert container.streams.audio[0].sample_rate == SR


def test_text_errors_name_their_field(server, portrait, speech):
    pid = portrait["portrait_id"]

    def field_of(response) -> tuple[int, str, str | None]:
        status, code, _ = error_of(response)
        return status, code, response.json()["error"].get("field")

    def generate_text(files=None, **fields):
        return requests.post(f"{server}/v1/generate", files=files or {"x": ("x", b"1")},
                             data={"portrait_id": pid, **fields}, timeout=TIMEOUT)

    gradient = np.repeat(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], 256, 0).repeat(3, 2)
    cases = {
        "unknown language": (spoken(server, "Bonjour", language="fr"), 422, "unknown_language", "language"),
        "unknown voice": (spoken(server, "Hello", voice="espeak/cmn"), 422, "unknown_voice", "voice"),
        "not installed anywhere": (spoken(server, "Hello", voice="festival/nobody"), 422, "unknown_voice", "voice"),
        "text over the limit": (spoken(server, "a" * 401), 413, "text_too_long", "text"),
        "speech over max_audio_s": (spoken(server, "one two three four five six seven " * 8), 413,
                                    "audio_too_long", "text"),
        "empty text": (spoken(server, ""), 400, "empty_text", "text"),
        "white space": (spoken(server, " \n\t "), 400, "empty_text", "text"),
        "no text": (requests.post(f"{server}/v1/speech", json={"language": "en"}, timeout=30), 422,
                    "invalid_request", "text"),
        "unknown key": (spoken(server, "Hello", speed=2), 422, "invalid_request", "speed"),
        "audio and text": (generate_text({"audio": ("a.wav", wav_bytes(speech))}, text="Hello"), 400,
                           "audio_and_text", "text"),
        "neither": (generate_text(), 400, "missing_field", "audio"),
        "generate, blank text": (generate_text(text="  "), 400, "empty_text", "text"),
        "generate, unknown language": (generate_text(text="Hallo", language="de"), 422, "unknown_language",
                                       "language"),
        "generate, unknown voice": (generate_text(text="Hola", language="es", voice="espeak/en-us"), 422,
                                    "unknown_voice", "voice"),
        "generate, long speech": (generate_text(text="one two three four five six seven " * 8), 413,
                                  "audio_too_long", "text"),
        "bad option": (generate_text(text="Hello", lip_scale="lots"), 422, "invalid_option", "lip_scale"),
        "unknown portrait": (generate_text(text="Hello", portrait_id="0" * 64), 404, "unknown_portrait",
                             "portrait_id"),
        "no face": (generate(server, wav_bytes(speech), png_bytes(gradient)), 422, "no_face", "image"),
    }
    for name, (response, status, code, field) in cases.items():
        assert field_of(response) == (status, code, field), (name, response.text)
    # blank text beside an audio file is an empty text box: the audio is spoken
    ok = generate_text({"audio": ("a.wav", wav_bytes(speech))}, text=" ", output="motion")
    assert ok.status_code == 200 and float(ok.headers["x-seconds"]) == pytest.approx(len(speech) / SR, abs=1e-3)


def test_stream_gives_the_offline_frame_count_in_order(server, portrait, speech):
    from PIL import Image

    from serve.client import stream

    pid = portrait["portrait_id"]
    offline = generate(server, wav_bytes(speech), portrait_id=pid, output="motion").json()["frames"]
    result = stream(server, pid, speech, SR, chunk_ms=200, realtime=False)
    assert result.ready["type"] == "ready" and result.ready["hop_frames"] == 8
    assert result.error is None and result.close_code == 1000
    indexes = [h["index"] for h, _, _ in result.frames]
    assert indexes == list(range(offline)) and result.end == {"type": "end", "frames": offline}
    header, jpeg, _ = result.frames[-1]
    assert header["audio"] == [round(header["index"] * SR / 25), round((header["index"] + 1) * SR / 25)]
    assert Image.open(io.BytesIO(jpeg)).size == (256, 256)
    # 44.1 kHz stereo-free PCM at another rate streams too
    from scipy.signal import resample_poly

    other = stream(server, pid, resample_poly(speech, 441, 160).astype(np.float32), 44100, realtime=False)
    assert abs(len(other.frames) - offline) <= 1 and other.close_code == 1000


def test_bad_stream_messages_get_close_codes(server, portrait):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from serve.client import ws_url

    pid = portrait["portrait_id"]
    start = {"type": "start", "portrait_id": pid, "sample_rate": SR}

    def close_code(*messages) -> tuple[int, str]:
        with connect(ws_url(server), max_size=None, open_timeout=30) as ws:
            error = ""
            try:
                for m in messages:
                    ws.send(m if isinstance(m, (bytes, str)) else json.dumps(m))
                while True:
                    msg = ws.recv(timeout=30)
                    if isinstance(msg, str) and json.loads(msg).get("type") == "error":
                        error = json.loads(msg)["error"]["code"]
            except ConnectionClosed as exc:
                return exc.rcvd.code, error
        raise AssertionError("not closed")

    assert close_code("hello") == (4400, "bad_start_message")
    assert close_code(b"\x00\x01") == (4400, "bad_message")
    assert close_code({**start, "portrait_id": "f" * 64}) == (4404, "unknown_portrait")
    assert close_code({**start, "sample_rate": 12345}) == (4400, "bad_sample_rate")
    assert close_code({**start, "lip_scale": "x"}) == (4400, "bad_start_message")
    assert close_code({**start, "blink_rate": -1}) == (4400, "bad_start_message")
    assert close_code(start, b"\x00" * 3) == (4400, "bad_audio_chunk")
    assert close_code(start, b"\x00" * 640, "not json") == (4400, "bad_message")
    assert close_code(start, b"\x00" * 300_000) == (4413, "chunk_too_large")
    assert close_code(start, *[b"\x00" * 200_000] * 3) == (4413, "audio_too_long")


def test_flood_past_the_queue_gets_503_then_serves_normally(server, portrait, speech):
    pid, wav = portrait["portrait_id"], wav_bytes(speech)
    statuses: list[int] = []

    def call() -> None:
        statuses.append(generate(server, wav, portrait_id=pid, crop_only="true").status_code)

    threads = [threading.Thread(target=call) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert len(statuses) == 10 and set(statuses) <= {200, 503}
    assert statuses.count(503) >= 1 and statuses.count(200) >= 1, statuses
    assert generate(server, wav, portrait_id=pid, output="motion").status_code == 200


def test_changing_the_model_uri_reloads_without_dropping_the_service(server, app_config, registered):
    from ray import serve

    from serve.app import APP_NAME, build_app

    _, second = registered
    answers: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            answers.append(requests.get(f"{server}/v1/model", timeout=30).status_code)
            time.sleep(0.1)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        serve.run(build_app(app_config.model_copy(update={"model_uri": f"models:/{MODEL}/{second}"})),
                  name=APP_NAME, route_prefix="/")
        deadline = time.time() + 60
        while requests.get(f"{server}/v1/model", timeout=30).json()["version"] != second:
            assert time.time() < deadline, "model not reloaded"
            time.sleep(0.5)
    finally:
        stop.set()
        poller.join()
    info = requests.get(f"{server}/v1/model", timeout=30).json()
    assert info["uri"] == f"models:/{MODEL}/{second}" and info["alias"] is None
    assert answers and set(answers) == {200}


def test_api_key_guards_everything_but_health_and_the_public_lists(server, app_config, portrait):
    import os

    from ray import serve

    from serve.app import APP_NAME, build_app
    from serve.client import stream

    os.environ["DISENTTALK_API_KEY"] = "s3cret"
    try:
        serve.run(build_app(app_config), name=APP_NAME, route_prefix="/")
    finally:
        del os.environ["DISENTTALK_API_KEY"]
    try:
        assert requests.get(f"{server}/healthz", timeout=30).status_code == 200
        denied = requests.get(f"{server}/v1/model", timeout=30)
        assert error_of(denied)[:2] == (401, "unauthorized")
        assert requests.get(f"{server}/v1/model", headers={"X-API-Key": "s3cret"}, timeout=30).status_code == 200
        refused = stream(server, portrait["portrait_id"], np.zeros(SR, np.float32), realtime=False)
        assert refused.error["code"] == "unauthorized"
        # what the page starts from is public; speaking is not
        for path in ("/v1/voices", "/v1/examples", "/v1/examples/astronaut.jpg", "/web/app.js", "/"):
            assert requests.get(f"{server}{path}", timeout=30).status_code == 200, path
        assert error_of(spoken(server, "Hello"))[:2] == (401, "unauthorized")
        with_key = requests.post(f"{server}/v1/speech", json={"text": "Hello"}, headers={"X-API-Key": "s3cret"},
                                 timeout=30)
        assert with_key.status_code == 200 and with_key.headers["content-type"] == "audio/wav"
    finally:
        serve.run(build_app(app_config), name=APP_NAME, route_prefix="/")
