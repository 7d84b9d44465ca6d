"""``disenttalk bench ...``: speed benchmarks and behaviour probes that print figures (never asserted in tests)."""

from __future__ import annotations

import typer

from disenttalk.constants import SAMPLE_RATE
from workflows import bench_voices

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
    gen.motion(rng.standard_normal(SAMPLE_RATE).astype(np.float32) * 0.1, SAMPLE_RATE, steps=2)  # warm-up
    steps = {"ddim": 25, "ddpm": cfg.diffusion.num_timesteps}
    for name in case:
        if name not in steps:
            raise typer.BadParameter(f"unknown case {name!r}; expected ddim or ddpm")
        for audio_s in seconds:
            if quick and name == "ddpm" and audio_s > min(seconds):
                continue
            audio = (0.1 * rng.standard_normal(int(audio_s * SAMPLE_RATE))).astype(np.float32)
            times, cpu = [], []
            for _ in range(1 if quick else repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                gen.motion(audio, SAMPLE_RATE, sampler=name, steps=steps[name], guidance=guidance, seed=0)
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


def _pose_photos(images: list[str]) -> list[tuple[str, object]]:
    """(name, RGB photo) for each image path given, else the astronaut and matplotlib's Grace Hopper."""
    from disenttalk import media

    if images:
        return [(path, media.read_image(path)) for path in images]
    from skimage import data

    photos = [("astronaut", data.astronaut())]
    try:
        import matplotlib.cbook

        photos.append(("grace_hopper", media.read_image(matplotlib.cbook.get_sample_data(
            "grace_hopper.jpg", asfileobj=False))))
    except (ImportError, OSError, ValueError):  # an install without matplotlib's sample data
        pass
    return photos


@app.command("pose")
def pose(
    image: list[str] = typer.Option([], "--image", help="Photos to measure (repeatable); default: the "
                                    "astronaut and matplotlib's Grace Hopper."),
    tolerance: float = typer.Option(0.001, help="Share of the face area (inside the still ring) that "
                                    "may be stretched or squashed twofold or folded."),
    size: int = typer.Option(256, help="Side of the face crop the warp is measured on (the model's)."),
) -> None:
    """How far the warp renderer can turn each photo's head: one JSON line per photo with the
    plausible range (negative, positive) of pitch, yaw, roll (degrees), shift x, y (face sizes)
    and zoom (log scale), and a last line with the range every photo holds."""
    import json
    import time

    from disenttalk.face.portrait import NoUsableFace, prepare_portrait
    from disenttalk.generate.retarget import AXES, PoseLimits, pose_range

    common: dict[str, list[float]] = {}
    for name, photo in _pose_photos(image):
        start = time.perf_counter()
        try:
            portrait = prepare_portrait(photo, size=size)
        except NoUsableFace as exc:
            print(json.dumps({"photo": name, "error": str(exc)}), flush=True)
            continue
        reach = pose_range(portrait.crop, portrait.landmarks, tolerance=tolerance)
        for axis, (lo, hi) in reach.items():
            common[axis] = [max(lo, common.get(axis, [lo, hi])[0]), min(hi, common.get(axis, [lo, hi])[1])]
        print(json.dumps({"photo": name, **{k: list(v) for k, v in reach.items()},
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)
    if common:
        limits = PoseLimits()
        defaults = dict(zip(AXES, [limits.pitch, limits.yaw, limits.roll, limits.shift, limits.shift,
                                   limits.zoom], strict=True))
        print(json.dumps({"photo": "all", **common, "defaults": defaults}), flush=True)


def _detail(image, box: tuple[float, float, float, float]) -> float:
    """Fine detail of a photo's face box: variance of the Laplacian of its grey levels."""
    from skimage.color import rgb2gray
    from skimage.filters import laplace

    x, y, w, h = (int(round(v)) for v in box)
    return float(laplace(rgb2gray(image[max(y, 0):y + h, max(x, 0):x + w])).var())


@app.command("detail")
def detail(
    image: list[str] = typer.Option(..., "--image", help="Photos to animate (repeatable)."),
    model: str | None = typer.Option(None, help="Model URI or bundle folder: the face speaks "
                                     "--text; without one, a scripted jaw and blinks (bench face's)."),
    text: str = typer.Option("The quick brown fox jumps over the lazy dog, and then it runs away.",
                             help="English sentence spoken with the model (espeak-ng)."),
    frames: int = typer.Option(140, help="Frames of scripted motion without a model."),
) -> None:
    """How much of each photo's fine detail a video pasted into it keeps: one JSON line per photo
    with the Laplacian variance of the face box, video frame over photo (median and 10th
    percentile over frames), the share of the box's pixels that differ from the photo, and the
    side the face was drawn at (the photo's own pixels up to 512)."""
    import json

    import numpy as np

    from disenttalk import media
    from disenttalk.face.portrait import prepare_portrait
    from disenttalk.generate.generator import crop_renderer

    generator = motion = None
    if model is not None:
        from disenttalk.generate.generator import Generator
        from disenttalk.synth.speech import SAMPLE_RATE, synthesize
        from workflows.register import resolve_bundle

        generator = Generator.from_bundle(resolve_bundle(model))
        motion = generator.motion(synthesize(text, "en").audio, SAMPLE_RATE, seed=0)
    for path in image:
        photo = media.read_image(path)
        portrait = prepare_portrait(photo)
        sharp = portrait.sharp_crop(photo)
        renderer, scale = crop_renderer(portrait.crop, portrait.landmarks, sharp)
        if generator is not None:
            targets = generator.landmarks(motion, portrait.landmarks)
        else:
            from disenttalk.render.benchmark import talking_targets

            targets = talking_targets(portrait.landmarks, frames)
        drawn_on = renderer.portrait
        pasted = portrait.paste(photo, renderer.render(targets * scale), still=drawn_on)
        whole = _detail(photo, portrait.box)
        kept = np.array([_detail(f, portrait.box) / whole for f in pasted])
        x, y, w, h = (int(round(v)) for v in portrait.box)
        differ = (pasted[:, max(y, 0):y + h, max(x, 0):x + w] != photo[max(y, 0):y + h, max(x, 0):x + w])
        print(json.dumps({"photo": path, "box_px": int(round(portrait.box[2])), "drawn_px": int(drawn_on.shape[0]),
                          "frames": len(pasted), "detail_kept_median": round(float(np.median(kept)), 3),
                          "detail_kept_p10": round(float(np.percentile(kept, 10)), 3),
                          "pixels_changed": round(float(differ.any(-1).mean()), 3)}), flush=True)


def _train_batch(batch: int, window: int, n: int, features: int, seed: int):
    """A synthetic denoiser batch with the demo corpus's shapes (N dims, log-mel features)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return {"expression": torch.randn(batch, window, n, generator=g),
            "audio": torch.randn(batch, window, features, generator=g)}


def _denoiser_steps(batch_size: int, steps: int, warmup: int, threads: int, n: int,
                    ddp: bool = False) -> dict:
    """Time ``steps`` denoiser train steps (Eq. 8 + λ·Eq. 10) in this process; seconds per step."""
    import statistics
    import time

    import torch

    from disenttalk.face.regions import RegionSplit
    from disenttalk.model.config import ModelConfig
    from disenttalk.model.denoiser import Denoiser
    from disenttalk.model.diffusion import GaussianDiffusion
    from disenttalk.model.sync import SyncExpert
    from disenttalk.model.train import denoiser_train_step

    torch.set_num_threads(threads)
    cfg = ModelConfig(n_expression=n, k_lip=min(13, n // 3), k_eye=min(8, n // 4))
    split = RegionSplit.contiguous(cfg.n_expression, cfg.k_lip, cfg.k_eye)
    features = 2 * cfg.audio.n_mels
    denoiser = Denoiser(cfg.denoiser, split, features)
    expert = SyncExpert(cfg.sync, audio_dim=features, lip_dim=cfg.k_lip)
    if ddp:
        import ray.train.torch

        denoiser = ray.train.torch.prepare_model(denoiser)  # as the train stage wraps it
    opt = torch.optim.Adam(denoiser.parameters(), lr=1e-3)
    diffusion = GaussianDiffusion(cfg.diffusion, split)
    batch = _train_batch(batch_size, 80, n, features, 0)
    gen = torch.Generator().manual_seed(0)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        denoiser_train_step(denoiser, diffusion, batch, opt, split=split, expert=expert,
                            generator=gen)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return {"s_per_step": statistics.median(times), "steps": steps}


def _ray_train_loop(config: dict) -> None:
    import json
    from pathlib import Path

    import ray.train

    out = _denoiser_steps(config["batch"], config["steps"], config["warmup"], config["threads"],
                          config["n"], ddp=True)
    if ray.train.get_context().get_world_rank() == 0:  # Train V2 keeps metrics with checkpoints only
        Path(config["out"]).write_text(json.dumps(out))


@app.command("train")
def train_speed(
    batch_size: int = typer.Option(32, help="Global batch (windows of 80 frames per step)."),
    steps: int = typer.Option(30, help="Timed steps per case (median reported)."),
    warmup: int = typer.Option(5, help="Untimed steps first."),
    n_expression: int = typer.Option(24, help="Expression dims N (the demo's fit uses 24)."),
    case: list[str] = typer.Option(["plain", "ray-1x2", "ray-2x1"], "--case",
                                   help="plain = one process, 2 threads; ray-WxC = Ray Train, "
                                        "W workers × C CPUs (DDP), batch split across workers."),
) -> None:
    """Denoiser training throughput: a plain loop vs Ray Train layouts on the same global batch."""
    import json
    import tempfile
    from pathlib import Path

    for name in case:
        if name == "plain":
            out = _denoiser_steps(batch_size, steps, warmup, 2, n_expression)
            workers, cpus = 1, 2
        elif name.startswith("ray-"):
            import ray
            import ray.train
            from ray.train.torch import TorchTrainer

            from workflows.platform.raycluster import RayConfig, init_ray, shutdown_if_started

            workers, cpus = (int(v) for v in name[4:].split("x"))
            started = init_ray(RayConfig(num_cpus=max(2, workers * cpus), progress_bars=False))
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    trainer = TorchTrainer(
                        _ray_train_loop,
                        train_loop_config={"batch": batch_size // workers, "steps": steps,
                                           "warmup": warmup, "threads": cpus, "n": n_expression,
                                           "out": f"{tmp}/timing.json"},
                        scaling_config=ray.train.ScalingConfig(
                            num_workers=workers, resources_per_worker={"CPU": cpus}),
                        run_config=ray.train.RunConfig(storage_path=tmp, name="bench-train"))
                    trainer.fit()
                    out = json.loads(Path(tmp, "timing.json").read_text())
            finally:
                shutdown_if_started(started)
        else:
            raise typer.BadParameter(f"unknown case {name!r}")
        print(json.dumps({"case": name, "workers": workers, "cpus_per_worker": cpus,
                          "global_batch": batch_size, "s_per_step": round(out["s_per_step"], 4),
                          "steps_per_s": round(1.0 / out["s_per_step"], 3),
                          "windows_per_s": round(batch_size / out["s_per_step"], 1)}), flush=True)


app.command("voices")(bench_voices.voices)


if __name__ == "__main__":  # python -m workflows.bench <motion|face|pose|detail|train|voices> ...
    app()
