"""``disenttalk bench ...``: speed benchmarks that print figures (never asserted in tests)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Benchmarks: print JSON lines with measured figures.", no_args_is_help=True)


def _face_frames(size: int, count: int):
    """``count`` frames of the astronaut at ``size``², drifting a pixel a frame (the tracker must follow)."""
    import numpy as np
    from skimage import data
    from skimage.transform import resize

    img = (resize(data.astronaut(), (size, size), anti_aliasing=True) * 255).astype(np.uint8)
    drift = np.round(3 * np.sin(np.arange(count) / 5.0)).astype(int)
    return np.stack([np.roll(img, d, axis=1) for d in drift])


def _bench_face_tracker(size: int, frames: int, repeats: int) -> dict:
    """MediaPipe FaceMesh in video mode: frames/s (wall and per CPU-second) and graph start-up."""
    import statistics
    import time

    from disenttalk.face.tracker import FaceTracker

    clip = _face_frames(size, frames)
    tracker = FaceTracker()
    tracker.track(clip[:5])  # warm-up: loads the models once per process
    walls, cpus, starts = [], [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        tracks = tracker.track(clip)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        s0 = time.perf_counter()
        tracker.track(clip[:1])  # a fresh graph per clip: what a one-frame clip costs
        starts.append(time.perf_counter() - s0)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    return {"component": "face_tracker", "size": size, "frames": frames, "repeats": repeats,
            "found": round(tracks.fraction_valid, 3), "fps": round(frames / wall, 1),
            "fps_per_cpu_s": round(frames / cpu, 1), "ms_per_frame": round(1000 * wall / frames, 2),
            "clip_start_ms": round(1000 * statistics.median(starts), 2)}


# Components of ``bench face``; each takes (size, frames, repeats) and returns one JSON record.
FACE_COMPONENTS = {"tracker": _bench_face_tracker}


@app.command("face")
def face(
    component: list[str] = typer.Option(["tracker"], "--component",
                                        help="What to time (repeatable): " + ", ".join(FACE_COMPONENTS)),
    size: int = typer.Option(256, help="Square frame size in pixels."),
    frames: int = typer.Option(100, help="Frames per timed clip."),
    repeats: int = typer.Option(3, help="Timed runs per component (medians are reported)."),
) -> None:
    """Face pipeline speed: one JSON line per component (tracker frames/s at 256² in video mode)."""
    import json

    for name in component:
        if name not in FACE_COMPONENTS:
            raise typer.BadParameter(f"unknown component {name!r}; expected one of {list(FACE_COMPONENTS)}")
        print(json.dumps(FACE_COMPONENTS[name](size, frames, repeats)), flush=True)
