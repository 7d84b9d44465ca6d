"""``disenttalk inspect VIDEO``: track the face in a video and report what it does.

Prints a short report (frames with a face, blinks, mouth opening), optionally writes it as
JSON and renders an overlay video with the landmarks drawn on. Bad input (not a video, no
face) ends with one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import typer


def report(tracks, fps: float) -> dict:
    """Summary of a clip's tracks: face coverage, blinks and mouth opening (JSON-ready)."""
    from disenttalk.face.measures import blink_rate, detect_blinks, eye_aspect_ratio, mouth_opening

    ear = eye_aspect_ratio(tracks.landmarks)  # [T,2]
    mouth = mouth_opening(tracks.landmarks)  # [T]
    valid = tracks.valid
    blinks = detect_blinks(ear, fps)
    return {
        "frames": int(len(valid)),
        "fps": float(fps),
        "duration_s": round(len(valid) / fps, 3),
        "frames_with_face": int(valid.sum()),
        "blinks": [[round(s, 3), round(e, 3)] for s, e in blinks],
        "blink_rate": round(blink_rate(ear, fps), 4),
        "eye_aspect_ratio": {"median": _stat(np.nanmedian, ear.mean(-1), valid)},
        "mouth_opening": {"mean": _stat(np.nanmean, mouth, valid),
                          "max": _stat(np.nanmax, mouth, valid)},
    }


def _stat(fn, values: np.ndarray, valid: np.ndarray) -> float | None:
    return round(float(fn(values[valid])), 4) if valid.any() else None


def draw_landmarks(frames: np.ndarray, landmarks: np.ndarray, radius: int = 1) -> np.ndarray:
    """Copies of frames [T,H,W,3] with landmarks [T,478,3] as small green dots (NaN skipped)."""
    out = frames.copy()
    t, h, w = frames.shape[:3]
    xy = np.round(landmarks[..., :2]).astype(np.float64)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy > radius * radius:
                continue
            x, y = xy[..., 0] + dx, xy[..., 1] + dy  # [T,478]
            ok = np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
            frame_idx = np.broadcast_to(np.arange(t)[:, None], x.shape)
            out[frame_idx[ok], y[ok].astype(int), x[ok].astype(int)] = (0, 255, 0)
    return out


def _summary(rep: dict) -> str:
    mouth = rep["mouth_opening"]
    lines = [
        f"frames            {rep['frames']} ({rep['duration_s']} s at {rep['fps']:g} fps)",
        f"frames with face  {rep['frames_with_face']}",
        f"blinks            {len(rep['blinks'])} ({rep['blink_rate']:.2f} per s)",
        f"mouth opening     mean {mouth['mean']}, max {mouth['max']} (face sizes)",
    ]
    return "\n".join(lines)


def _fail(message: str) -> None:
    typer.echo(f"disenttalk inspect: {message}", err=True)
    raise typer.Exit(code=1)


def inspect(
    video: str = typer.Argument(..., help="Video file (local path or s3:// URI) to inspect."),
    overlay: Path | None = typer.Option(None, "--overlay", help="Write the video with landmarks drawn."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON."),
) -> None:
    """Track the face in VIDEO and report blinks, mouth opening and face coverage."""
    from disenttalk.face.tracker import FaceTracker
    from disenttalk.media import MediaError, read_video, write_video
    from workflows.common import UserError
    from workflows.platform import storage

    try:
        overlay = overlay and storage.local_path(overlay, "--overlay")
        json_path = json_path and storage.local_path(json_path, "--json")
        if storage.is_s3(video):
            with storage.local_copy(video) as local:
                clip = read_video(local)
        else:
            clip = read_video(video)
    except (MediaError, UserError, FileNotFoundError) as exc:
        _fail(str(exc))
    with FaceTracker() as tracker:
        tracks = tracker.track(clip.frames)
    if not tracks.valid.any():
        _fail(f"{video}: no face found in any of its {len(tracks)} frames")
    rep = report(tracks, clip.fps)
    typer.echo(_summary(rep))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rep, indent=2))
    if overlay is not None:
        write_video(overlay, draw_landmarks(clip.frames, tracks.landmarks), clip.fps, clip.audio)
        typer.echo(f"overlay           {overlay}")
    sys.stdout.flush()


if __name__ == "__main__":  # python -m workflows.inspect VIDEO ...
    typer.run(inspect)
