"""``disenttalk bench ...``: speed benchmarks that print figures (never asserted in tests)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Benchmarks: print JSON lines with measured figures.", no_args_is_help=True)


@app.command("motion")
def motion(
    seconds: list[float] = typer.Option([10.0, 53.0], "--seconds", help="Audio lengths to time."),
    case: list[str] = typer.Option(["ddim", "ddpm"], "--case",
                                   help="ddim = DDIM-25 with guidance, ddpm = DDPM over all T steps."),
    repeats: int = typer.Option(3, help="Timed runs per case (the median is reported)."),
    quick: bool = typer.Option(False, "--quick", help="One timed run per case, DDPM on 10 s only."),
    guidance: float = typer.Option(2.0, help="Classifier-free guidance scale s (Eq. 9)."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
) -> None:
    """Motion generation speed (random weights, default ModelConfig): JSON lines with RTF."""
    import json
    import statistics
    import time

    import numpy as np
    import torch

    from disenttalk.bundle import Bundle
    from disenttalk.face.regions import RegionSplit
    from disenttalk.generate import Generator
    from disenttalk.model.config import ModelConfig
    from disenttalk.model.denoiser import Denoiser

    cfg = ModelConfig()
    split = RegionSplit.contiguous(cfg.n_expression, cfg.k_lip, cfg.k_eye)
    from disenttalk.audio import make_frontend

    frontend = make_frontend(cfg.audio)
    denoiser = Denoiser(cfg.denoiser, split, frontend.feature_dim)
    norm = {"mean": np.zeros(cfg.n_expression, np.float32), "std": np.ones(cfg.n_expression, np.float32)}
    bundle = Bundle(path=None, config=cfg, split=split, norm=norm, expert_state={},
                    denoiser_state=denoiser.state_dict())
    gen = Generator(bundle, device=device, frontend=frontend, denoiser=denoiser)
    print(json.dumps({"parameters": denoiser.num_parameters(), "device": str(gen.device),
                      "threads": torch.get_num_threads(), "window": gen.plan.hop + gen.plan.prefix,
                      "prefix": gen.plan.prefix}), flush=True)
    rng = np.random.default_rng(0)
    gen.motion(rng.standard_normal(16000).astype(np.float32) * 0.1, 16000, steps=2)  # warm-up
    steps = {"ddim": 25, "ddpm": cfg.diffusion.num_timesteps}
    for name in case:
        if name not in steps:
            raise typer.BadParameter(f"unknown case {name!r}; expected ddim or ddpm")
        for audio_s in seconds:
            if quick and name == "ddpm" and audio_s > min(seconds):
                continue
            audio = (0.1 * rng.standard_normal(int(audio_s * 16000))).astype(np.float32)
            times, cpu = [], []
            for _ in range(1 if quick else repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                gen.motion(audio, 16000, sampler=name, steps=steps[name], guidance=guidance, seed=0)
                if gen.device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)  # less sensitive to a busy machine
            secs = statistics.median(times)
            print(json.dumps({"audio_s": audio_s, "sampler": name, "steps": steps[name],
                              "guidance": guidance, "seconds": round(secs, 3),
                              "rtf": round(secs / audio_s, 4), "repeats": len(times),
                              "cpu_seconds": round(statistics.median(cpu), 3)}), flush=True)


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


def _bench_face_renderer(size: int, frames: int, repeats: int) -> dict:
    """WarpRenderer on the tracked astronaut: frames/s for talking (warp + painting) and still targets."""
    from disenttalk.face.tracker import FaceTracker
    from disenttalk.render.benchmark import measure_renderer

    portrait = _face_frames(size, 1)[0]
    with FaceTracker(static=True) as tracker:
        landmarks = tracker.track_image(portrait)
    if landmarks is None:
        raise typer.BadParameter(f"no face found in the {size}² benchmark portrait")
    return {"component": "face_renderer", "repeats": repeats, "statistic": "best",
            **measure_renderer(portrait, landmarks, frames=frames, repeats=repeats)}


# Components of ``bench face``; each takes (size, frames, repeats) and returns one JSON record.
FACE_COMPONENTS = {"tracker": _bench_face_tracker, "renderer": _bench_face_renderer}


@app.command("face")
def face(
    component: list[str] = typer.Option(["tracker", "renderer"], "--component",
                                        help="What to time (repeatable): " + ", ".join(FACE_COMPONENTS)),
    size: int = typer.Option(256, help="Square frame size in pixels."),
    frames: int = typer.Option(100, help="Frames per timed clip."),
    repeats: int = typer.Option(3, help="Timed runs per component (medians are reported)."),
) -> None:
    """Face pipeline speed: one JSON line per component (tracker in video mode, warp renderer)."""
    import json

    for name in component:
        if name not in FACE_COMPONENTS:
            raise typer.BadParameter(f"unknown component {name!r}; expected one of {list(FACE_COMPONENTS)}")
        print(json.dumps(FACE_COMPONENTS[name](size, frames, repeats)), flush=True)
