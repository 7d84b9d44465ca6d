"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

What a newcomer does first: pick an example face (its face box appears), type a sentence, press
Generate → a video that plays for as long as the speech, downloadable with its motion; a photo
without a face → the error next to the photo input; Live with typed text and with the (fake)
microphone → frames on the canvas with statistics; the same at phone width, by keyboard.
Screenshots go to ``<workspace>/test-artifacts/`` (and each test's tmp folder).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.serve.conftest import png_bytes, wav_bytes

pytestmark = pytest.mark.ray
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SENTENCE = "Hello there, I am a photo that talks."


@pytest.fixture(scope="module")
def browser(tmp_path_factory, speech):
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the dev extra) drives Chromium")
    mic = tmp_path_factory.mktemp("mic") / "speech.wav"
    mic.write_bytes(wav_bytes(np.tile(speech, 4)))  # the fake microphone loops this file
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=[*FLAGS, f"--use-file-for-fake-audio-capture={mic}"])
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(server, browser):
    """``open_page(viewport)`` → a page at ``/`` with its example photos and voices loaded;
    uncaught script errors fail the test."""
    pages, errors = [], []

    def open_(viewport: dict = DESKTOP, accept_downloads: bool = False):
        context = browser.new_context(viewport=viewport, accept_downloads=accept_downloads)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server + "/")
        page.wait_for_selector(".example img")
        page.wait_for_function("document.getElementById('voice').options.length > 0")
        pages.append(context)
        return page

    yield open_
    for context in pages:
        context.close()
    assert not errors, errors


def shoot(page, tmp_path: Path, name: str) -> None:
    from disenttalk import paths

    out = paths.home() / "test-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    for folder in (tmp_path, out):
        page.screenshot(path=str(folder / name), full_page=True)


def pick_example(page, example: str = "astronaut") -> None:
    page.click(f".example[data-example={example}]")
    page.wait_for_selector(".face-box.chosen")


def generated(page) -> dict:
    """Wait for the video of a Generate press to load; its frames, duration and speech length."""
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')", timeout=120_000)
    page.wait_for_function("(() => { const v = document.getElementById('video');"
                           " return v.readyState >= 2 && v.duration > 0.5 && v.currentTime > 0; })()",
                           timeout=30_000)
    return page.evaluate("(() => { const v = document.getElementById('video');"
                         " return {frames: Number(v.dataset.frames), duration: v.duration,"
                         " seconds: Number(v.dataset.seconds)}; })()")


def test_typed_text_becomes_a_video_that_plays_and_downloads(open_page, tmp_path):
    import av

    page = open_page(accept_downloads=True)
    assert page.is_visible("#empty") and not page.is_visible("#video") and not page.is_visible("#live")
    shoot(page, tmp_path, "page-desktop-start.png")
    pick_example(page)
    box = page.eval_on_selector(".face-box.chosen", "b => [b.offsetLeft, b.offsetTop, b.offsetWidth, b.offsetHeight]")
    image = page.eval_on_selector("#preview-img", "i => [i.offsetWidth, i.offsetHeight]")
    assert box[2] > 0.15 * image[0] and box[0] + box[2] <= image[0] + 2 and box[1] + box[3] <= image[1] + 2
    page.select_option("#language", "en")
    page.fill("#text", SENTENCE)
    page.click("#generate")
    page.wait_for_selector("#progress-bar")
    video = generated(page)
    from disenttalk.synth import catalogue

    spoken = len(catalogue.say(SENTENCE, "en")) / 16000  # the server speaks with the same default voice
    assert video["seconds"] == pytest.approx(spoken, abs=0.01)
    assert video["duration"] == pytest.approx(video["seconds"], abs=0.15)  # as long as the speech
    assert abs(video["frames"] - video["seconds"] * 25) <= 1.5
    shoot(page, tmp_path, "page-desktop-generated.png")

    with page.expect_download() as download:
        page.click("#download-video")
    path = tmp_path / "download.mp4"
    download.value.save_as(path)
    with av.open(str(path)) as container:
        assert container.streams.video and container.streams.audio
        assert sum(1 for _ in container.decode(video=0)) == video["frames"]
    with page.expect_download() as download:
        page.click("#download-json")
    motion = json.loads(Path(download.value.path()).read_text())
    assert len(motion["expression"]) == video["frames"] and len(motion["pose"]) == video["frames"]


def test_a_photo_without_a_face_is_refused_next_to_the_photo_input(open_page, tmp_path):
    page = open_page()
    noface = tmp_path / "wall.png"
    ramp = np.linspace(0, 255, 320, dtype=np.uint8)
    noface.write_bytes(png_bytes(np.stack([np.tile(ramp, (240, 1))] * 3, axis=-1)))
    page.set_input_files("#photo", str(noface))
    page.wait_for_selector("#photo-error:not([hidden])")
    assert "face" in page.text_content("#photo-error").lower()
    assert page.get_attribute("#photo", "aria-invalid") == "true"
    assert page.is_hidden("#text-error") and page.is_hidden("#audio-error")
    page.fill("#text", SENTENCE)
    page.click("#generate")  # no usable face chosen: said next to the photo, nothing sent
    page.wait_for_function("document.getElementById('photo-error').textContent.includes('Pick')")


def test_empty_text_is_refused_next_to_the_text(open_page):
    page = open_page()
    pick_example(page)
    page.fill("#text", "   ")
    page.click("#generate")
    page.wait_for_selector("#text-error:not([hidden])")
    assert page.get_attribute("#text", "aria-invalid") == "true"
    assert page.is_hidden("#photo-error")


def test_live_streams_typed_text_and_the_microphone(open_page, tmp_path):
    page = open_page()
    pick_example(page)
    page.fill("#text", SENTENCE)
    page.click("#live-start")
    page.wait_for_function("Number(document.getElementById('live').dataset.frames || 0) >= 20", timeout=120_000)
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Live stream ended')",
                           timeout=60_000)  # the text's audio all sent: the server flushed and closed
    stats = {k: page.text_content(f"#stat-{k}") for k in ("first", "fps", "frames", "lag")}
    assert stats["first"].endswith(" s") and float(stats["fps"]) > 0 and int(stats["frames"]) >= 20, stats
    shoot(page, tmp_path, "page-desktop-live.png")

    page.click("#tab-audio")  # no file chosen: the microphone
    page.click("#live-start")
    page.wait_for_function("Number(document.getElementById('live').dataset.frames || 0) >= 20", timeout=120_000)
    page.click("#live-stop")
    page.wait_for_function("!document.getElementById('live-start').disabled", timeout=60_000)
    assert "error" not in (page.get_attribute("#status", "class") or "")


def test_phone_width_and_keyboard(open_page, tmp_path):
    page = open_page(PHONE)
    shoot(page, tmp_path, "page-phone-start.png")
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select, textarea')]
        .filter(el => !el.labels.length && !el.getAttribute('aria-label')).map(el => el.id)""")
    assert not unlabelled, unlabelled
    page.focus(".example[data-example=astronaut]")
    page.keyboard.press("Enter")
    page.wait_for_selector(".face-box.chosen")
    page.focus("#tab-text")
    page.keyboard.press("ArrowRight")  # the tabs follow the arrow keys
    assert page.get_attribute("#tab-audio", "aria-selected") == "true" and page.is_visible("#audio")
    page.keyboard.press("ArrowLeft")
    page.fill("#text", SENTENCE)
    page.focus("#generate")
    page.keyboard.press("Enter")
    generated(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing wider than the phone
    shoot(page, tmp_path, "page-phone-generated.png")
