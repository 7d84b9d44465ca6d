"""Screenshots of the docs site (home and serving API pages) or of the serving page, full-page PNGs.

    .venv/bin/python docs/screenshots.py [--chromium /usr/bin/chromium] [--out docs/images]
    .venv/bin/python docs/screenshots.py --page http://127.0.0.1:8000/

The first builds the site into a temporary folder, serves it with ``python -m http.server`` on a
free loopback port, opens it in headless Chromium (Debian's ``chromium``, driven by Playwright),
saves ``site-home.png`` and ``site-serving.png`` and stops the server it started. The second
drives a running ``disenttalk serve`` as a newcomer would (the astronaut example, an English
sentence, Generate) at desktop and phone width and saves ``page-{desktop,phone}-{start,generated}.png``.
A PNG over ``--max-kb`` is scaled down until it fits.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"site-home.png": "", "site-serving.png": "serving/"}
WIDTH = 1280


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build(site: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)],
                   cwd=ROOT, check=True, env=env)


def wait_up(url: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def shrink(path: Path, max_kb: int) -> None:
    """Make the PNG at most ``max_kb``: fewer palette colours at full size first (text stays
    sharp), then smaller sizes."""
    from PIL import Image

    with Image.open(path) as img:
        original = img.convert("RGB")
    for scale in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5):
        size = (round(original.width * scale), round(original.height * scale))
        small = original if scale == 1.0 else original.resize(size, Image.LANCZOS)
        for colors in (256, 64, 32):
            if path.stat().st_size <= max_kb * 1024:
                return
            small.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


VIEWPORTS = {"desktop": {"width": WIDTH, "height": 900}, "phone": {"width": 390, "height": 844}}
SENTENCE = "Hello! It's lovely to meet you. The weather is perfect for a walk in the park today."


def page_screenshots(browser, url: str, out: Path, max_kb: int) -> None:
    """The serving page before and after generating, at each of :data:`VIEWPORTS`."""
    for kind, viewport in VIEWPORTS.items():
        page = browser.new_page(viewport=viewport)
        page.goto(url)
        page.wait_for_selector(".example img")
        page.wait_for_function("document.getElementById('voice').options.length > 0")
        save(page, out / f"page-{kind}-start.png", max_kb)
        page.click(".example[data-example=astronaut]")
        page.wait_for_selector(".face-box.chosen")
        page.fill("#text", SENTENCE)
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('Done')",
                               timeout=600_000)
        page.wait_for_function("(() => { const v = document.getElementById('video');"
                               " return v.readyState >= 2 && Number.isFinite(v.duration); })()")
        # a frame in the middle of a word, paused, so the still shows speech
        page.evaluate("""new Promise((done) => { const v = document.getElementById('video');
            v.pause(); v.onseeked = () => done(); v.currentTime = Math.min(1.3, v.duration / 2); })""")
        save(page, out / f"page-{kind}-generated.png", max_kb)
        page.close()


def save(page, target: Path, max_kb: int) -> None:
    page.screenshot(path=str(target), full_page=True)
    shrink(target, max_kb)
    print(f"{target}: {target.stat().st_size // 1024} KB")


def site_screenshots(browser, out: Path, max_kb: int) -> None:
    """The docs site's pages of :data:`PAGES`, served from a fresh build."""
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        build(site)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(site)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}/"
            wait_up(base)
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            for name, path in PAGES.items():
                page.goto(base + path, wait_until="networkidle")
                save(page, out / name, max_kb)
        finally:
            server.terminate()
            server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--max-kb", type=int, default=400)
    parser.add_argument("--page", metavar="URL", help="screenshot the serving page at URL instead of the docs site")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True,
                                    args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        try:
            if args.page:
                page_screenshots(browser, args.page, args.out, args.max_kb)
            else:
                site_screenshots(browser, args.out, args.max_kb)
        finally:
            browser.close()


if __name__ == "__main__":
    main()
