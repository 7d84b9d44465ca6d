"""``disenttalk inspect``: report on a still-portrait video, overlay, clean failures."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from skimage.transform import resize
from typer.testing import CliRunner

from disenttalk.media import read_video, write_video
from workflows.cli import app


@pytest.fixture(scope="module")
def portrait_video(tmp_path_factory, astronaut):
    """2 s at 25 fps of the still astronaut (256²) with a 44.1 kHz 440 Hz tone."""
    img = (resize(astronaut, (256, 256), anti_aliasing=True) * 255).astype(np.uint8)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(2 * 44_100) / 44_100)
    path = tmp_path_factory.mktemp("inspect") / "astronaut.mp4"
    write_video(path, np.repeat(img[None], 50, 0), 25, audio=tone.astype(np.float32), sample_rate=44_100)
    return path


def test_inspect_reports_a_face_in_every_frame_and_no_blinks(portrait_video, tmp_path):
    report_path, overlay = tmp_path / "report.json", tmp_path / "overlay.mp4"
    result = CliRunner().invoke(
        app, ["inspect", str(portrait_video), "--json", str(report_path), "--overlay", str(overlay)]
    )
    assert result.exit_code == 0, result.output
    assert "frames with face  50" in result.output
    rep = json.loads(report_path.read_text())
    assert rep["frames"] == 50 and rep["frames_with_face"] == 50
    assert rep["blinks"] == [] and rep["blink_rate"] == 0.0
    assert 0 <= rep["mouth_opening"]["mean"] <= rep["mouth_opening"]["max"] < 0.5
    drawn = read_video(overlay)
    assert drawn.frames.shape == (50, 256, 256, 3) and drawn.audio is not None
    original = read_video(portrait_video).frames
    # Green dots on the face, nothing drawn in the corners.
    green = (drawn.frames[..., 1].astype(int) - drawn.frames[..., 0]) > 120
    assert green[0].sum() > 100 and not green[:, :20, :20].any()
    assert np.abs(drawn.frames[:, :20, :20].astype(int) - original[:, :20, :20]).mean() < 3


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workflows.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_not_a_video_fails_with_one_line(tmp_path):
    junk = tmp_path / "notes.mp4"
    junk.write_text("this is not a video\n" * 50)
    proc = _run_cli("inspect", str(junk))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "notes.mp4" in lines[0] and "Traceback" not in proc.stderr


def test_no_face_fails_cleanly(tmp_path):
    path = tmp_path / "grey.mp4"
    write_video(path, np.full((5, 64, 64, 3), 128, np.uint8), 25)
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 1
    assert "no face" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
