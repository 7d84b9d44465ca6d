"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

Upload flow: photo + audio file → the video plays. Live mode: Chromium's fake microphone plays
a WAV file into the WebSocket stream and frames arrive on the canvas. Screenshots go to
``<workspace>/test-artifacts/`` (and the test's tmp folder).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.serve.conftest import SR, png_bytes, wav_bytes

pytestmark = pytest.mark.ray
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
         "--use-fake-device-for-media-stream"]


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


def artifacts(tmp_path: Path) -> list[Path]:
    from disenttalk import paths

    out = paths.home() / "test-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    return [tmp_path, out]


def test_page_generates_a_video_and_streams_the_microphone(server, browser, astronaut, speech, tmp_path):
    photo, audio = tmp_path / "photo.png", tmp_path / "speech.wav"
    photo.write_bytes(png_bytes(astronaut))
    audio.write_bytes(wav_bytes(speech))
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server + "/")
    page.set_input_files("#photo", str(photo))
    page.set_input_files("#audio", str(audio))
    page.click("#generate")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')",
                           timeout=120_000)
    # the browser decodes the mp4 and plays it
    page.wait_for_function("(() => { const v = document.getElementById('video');"
                           " return v.readyState >= 2 && v.duration > 1 && v.currentTime > 0; })()",
                           timeout=30_000)
    frames = int(page.get_attribute("#video", "data-frames"))
    assert frames == int(np.ceil(len(speech) / SR * 25))
    for folder in artifacts(tmp_path):
        page.screenshot(path=str(folder / "serve-page-generated.png"), full_page=True)

    page.click("#live-start")
    page.wait_for_function("Number(document.getElementById('live').dataset.frames || 0) >= 20",
                           timeout=120_000)
    page.click("#live-stop")
    stats = page.text_content("#live-stats")
    assert "frames/s" in stats
    for folder in artifacts(tmp_path):
        page.screenshot(path=str(folder / "serve-page-live.png"), full_page=True)
    assert not errors, errors
    assert "error" not in (page.get_attribute("#status", "class") or "")
