"""What the generator deployment runs, free of Ray: load a model, make videos, step streams.

The model comes from a model URI (``models:/disenttalk@champion``, ``models:/name/3``,
``runs:/...``, a bundle folder or ``s3://``). An alias is resolved to its version first, so the
bundle loaded and the version reported are the same one. Two :class:`Generator` views share one
set of weights: the bundle's offline window for ``/v1/generate`` and a short low-latency window
for streams (``stream`` in ``configs/serve.yaml``).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from disenttalk.constants import SAMPLE_RATE
from disenttalk.face import topology as topo
from disenttalk.render.background import Ahead
from serve.config import ServeConfig
from serve.errors import ApiError
from serve.portraits import Portrait


def describe_model(uri: str) -> dict[str, Any]:
    """Name, version, alias and run id behind a model URI, and the exact URI to load."""
    info: dict[str, Any] = {"uri": uri, "name": None, "version": None, "alias": None,
                            "run_id": None, "load_uri": uri}
    if uri.startswith("runs:/"):
        info["run_id"] = uri[len("runs:/"):].split("/", 1)[0]
    if not uri.startswith("models:/"):
        return info
    from mlflow import MlflowClient

    from workflows.platform.tracking import tracking_uri

    client = MlflowClient(tracking_uri=tracking_uri())
    rest = uri[len("models:/"):].rstrip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    else:
        name, number = rest.rsplit("/", 1)
        alias, version = None, client.get_model_version(name, number)
    info.update(name=name, version=str(version.version), alias=alias, run_id=version.run_id,
                load_uri=f"models:/{name}/{version.version}")
    return info


@dataclass
class Loaded:
    """One loaded model: the offline and the streaming generator, and where they came from."""

    info: dict[str, Any]
    offline: Any  # disenttalk.generate.Generator, the bundle's window
    live: Any  # the same weights, low-latency window
    workdir: Path | None


def load_model(uri: str, cfg: ServeConfig, device: str | None = None) -> Loaded:
    """Download (if remote) and build the generators of ``uri``."""
    import torch

    from disenttalk.generate import Generator
    from workflows.register import resolve_bundle

    start = time.perf_counter()
    info = describe_model(uri)
    workdir = Path(tempfile.mkdtemp(prefix="disenttalk-serve-")) \
        if info["load_uri"].startswith(("models:/", "runs:/", "s3://")) else None
    try:
        path = resolve_bundle(info["load_uri"], workdir)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        offline = Generator.from_bundle(path, device=device)
        if offline.bundle.morphable is None:
            raise ValueError(f"{uri}: this bundle has no morphable model, so it cannot make video")
        live = Generator(offline.bundle, device=device, window=cfg.stream.window,
                         prefix=cfg.stream.prefix, first_hop=cfg.stream.first_hop,
                         frontend=offline.frontend,
                         denoiser=offline.denoiser, motion_reference=offline.motion_reference)
    except BaseException:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    info.update(bundle=str(path), device=str(offline.device), fps=float(offline.fps),
                loaded_at=time.time(), load_s=round(time.perf_counter() - start, 2),
                stream_window={"hop": live.plan.hop, "first_hop": live.plan.first,
                               "prefix": live.plan.prefix,
                               "look_ahead": live.plan.look_ahead, "margin": live.plan.margin})
    return Loaded(info=info, offline=offline, live=live, workdir=workdir)


def warm_up(model: Loaded) -> None:
    """One stream window of silence before the model serves: what a first window pays once (the
    hot path's export or compilation, lazy imports, first allocations) is not a live stream's
    stall."""
    from disenttalk.generate.batching import sample_windows
    from disenttalk.generate.generator import CLIP_X0

    live = model.live
    stream = live.open_stream(SAMPLE_RATE, steps=2)
    feats = live.features(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE, live.plan.hop + live.plan.prefix)
    job = live.window_job(0, feats, None, 0, stream.settings)
    sample_windows(live, [job], CLIP_X0)


def controls(options: Any) -> Any:
    """Per-region intensities of a request as :class:`Controls`."""
    from disenttalk.generate import Controls

    return Controls(lip_scale=options.lip_scale, eye_scale=options.eye_scale,
                    global_scale=options.global_scale, blinks=None if options.blinks else False,
                    blink_rate=options.blink_rate)


class Engine:
    """A model that can be swapped while requests run (each request keeps the one it started with)."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.model: Loaded | None = None
        self.load_error: str | None = None
        self._lock = threading.Lock()
        # Building a portrait's warp renderer (a thin-plate-spline solve) costs ~0.2 s on CPU,
        # 10x rendering a stream step's 8 frames: built once per portrait and model, reused.
        self._renderers: OrderedDict[tuple[str, bool], Any] = OrderedDict()  # by portrait id, sharp
        self._framed: OrderedDict[str, Portrait] = OrderedDict()  # portraits re-cut for the model
        self.batcher = None  # windows of concurrent requests sampled together (cfg.batching)
        if cfg.batching.enabled:
            from disenttalk.generate.batching import WindowBatcher

            self.batcher = WindowBatcher(cfg.batching.max_batch, cfg.batching.wait_ms)

    # -- model ------------------------------------------------------------------------------
    def load(self, uri: str) -> dict[str, Any]:
        """Load ``uri`` and swap it in; the previous model's files are removed."""
        new = load_model(uri, self.cfg)
        from disenttalk.model.fast import accelerate

        new.offline.batcher = new.live.batcher = self.batcher
        new.offline.hot_path = new.live.hot_path = accelerate(new.offline.denoiser, self.cfg.hot_path)
        warm_up(new)
        with self._lock:
            old, self.model, self.load_error = self.model, new, None
            self._renderers.clear()  # the new model may sit on another device
            self._framed.clear()  # ... and want another crop
        if old is not None and old.workdir:
            shutil.rmtree(old.workdir, ignore_errors=True)
        return new.info

    def current(self) -> Loaded:
        """The model now serving (503 while none is loaded)."""
        model = self.model
        if model is None:
            raise ApiError(503, "model_not_loaded", f"no model is loaded ({self.load_error})")
        return model

    def info(self) -> dict[str, Any]:
        """``GET /v1/model``."""
        model = self.current()
        out = {k: v for k, v in model.info.items() if k not in ("load_uri", "bundle")}
        out["load_error"] = self.load_error
        out["hot_path"] = self.cfg.hot_path
        batcher = self.batcher  # this replica's batches since it started (windows / batches)
        out["batching"] = {"enabled": batcher is not None,
                           "batches": batcher.batches if batcher else 0,
                           "windows": batcher.windows if batcher else 0}
        return out

    # -- offline ----------------------------------------------------------------------------
    def generate(self, audio: np.ndarray, portrait: Portrait, options: Any) -> dict[str, Any]:
        """A talking video (mp4 bytes with the audio) or the motion (JSON / npz)."""
        model = self.current()
        gen = model.offline
        kwargs = dict(steps=options.steps, guidance=options.guidance, seed=options.seed,
                      controls=controls(options))
        meta = {"fps": float(gen.fps), "seconds_of_audio": round(len(audio) / SAMPLE_RATE, 3),
                "model_version": model.info["version"]}
        if options.output == "mp4":
            # window k+1 of the motion samples in a worker thread while window k's frames render
            with Ahead(gen.motion_chunks(audio, SAMPLE_RATE, **kwargs)) as motions:
                chunks = self.frame_chunks(model, gen, motions, portrait, options.crop_only)
                body, timing = self.video(chunks, gen.fps, audio)
            meta.update(frames=timing.pop("frames"), motion_s=round(motions.busy_s, 3), **timing)
            return {"body": body, "media_type": "video/mp4", "meta": meta}
        t0 = time.perf_counter()
        motion = gen.motion(audio, SAMPLE_RATE, **kwargs)
        meta.update(frames=len(motion), motion_s=round(time.perf_counter() - t0, 3))
        if options.output in ("json", "motion"):
            body = json.dumps({**meta, "expression": motion.expression.tolist(),
                               "pose": motion.pose.tolist()}).encode()
            return {"body": body, "media_type": "application/json", "meta": meta}
        if options.output != "npz":
            raise ValueError(f"unknown output {options.output!r}")
        buf = io.BytesIO()
        np.savez(buf, expression=motion.expression, pose=motion.pose, fps=motion.fps)
        return {"body": buf.getvalue(), "media_type": "application/octet-stream", "meta": meta}

    def video(self, chunks: Iterator[np.ndarray], fps: float, audio: np.ndarray) -> tuple[bytes, dict]:
        """MP4 bytes of the frames in ``chunks`` with ``audio``, each chunk encoded in a worker
        thread while the next one is made (memory holds a few chunks, not the video); and
        the render / encode seconds (they overlap, so the video takes about the larger), the
        size and the frame count."""
        from disenttalk import media
        from disenttalk.render.background import BackgroundWriter

        render_s, count = 0.0, 0
        with tempfile.TemporaryDirectory(prefix="disenttalk-video-") as tmp:
            out = Path(tmp) / "talk.mp4"
            # x264 on one thread: as fast as its own threading for these sizes, and it leaves the
            # other core to the renderer instead of competing with it
            with media.VideoWriter(out, fps, audio, SAMPLE_RATE, self.cfg.video_preset, threads=1) as writer:
                with BackgroundWriter(writer) as encoder:
                    while True:
                        t0 = time.perf_counter()
                        frames = next(chunks, None)
                        render_s += time.perf_counter() - t0
                        if frames is None:
                            break
                        count += len(frames)
                        encoder.write(frames)
                        del frames  # the next chunk is made without this one alive here
                t1 = time.perf_counter()  # the encoder's flush and the audio
            encode_s = encoder.busy_s + time.perf_counter() - t1
            body = out.read_bytes()
        height, width = writer.size
        return body, {"render_s": round(render_s, 3), "encode_s": round(encode_s, 3),
                      "size": [int(width), int(height)], "frames": count}

    def renderer(self, model: Loaded, portrait: Portrait, sharp: bool = False) -> tuple[Any, float]:
        """The portrait's WarpRenderer on ``model``'s device (cached, LRU) and its pixels per crop
        pixel: 1, or with ``sharp`` drawing on the photo's own pixels (``sharp_crop``)."""
        from disenttalk.face.portrait import sharp_crop

        key = (portrait.portrait_id, sharp)
        with self._lock:
            cached = self._renderers.get(key)
            if cached is not None:
                self._renderers.move_to_end(key)
                return cached
        image = sharp_crop(portrait.photo, portrait.transform, portrait.crop.shape[0]) if sharp else None
        renderer = model.offline.renderer(portrait.crop, portrait.crop_landmarks, image)
        with self._lock:
            self._renderers[key] = renderer
            while len(self._renderers) > 32:
                self._renderers.popitem(last=False)
        return renderer

    def framed(self, model: Loaded, portrait: Portrait) -> Portrait:
        """``portrait`` cut as ``model``'s training clips were (Portraits cuts with the default
        framing, not knowing the model); re-cut portraits are cached like renderers."""
        from disenttalk.face.crop import framing
        from serve.portraits import reframed

        want = framing(model.offline.bundle.meta.get("framing"))
        if tuple(portrait.framing) == want:
            return portrait
        with self._lock:
            found = self._framed.get(portrait.portrait_id)
        if found is None:
            found = reframed(portrait, want)
            with self._lock:
                self._framed[portrait.portrait_id] = found
                while len(self._framed) > 32:
                    self._framed.popitem(last=False)
        return found

    def frames(self, model: Loaded, gen: Any, motion: Any, portrait: Portrait,
               crop_only: bool) -> np.ndarray:
        """Rendered crops [T,S,S,3], or pasted into the photo [T,H,W,3] (as Generator.render),
        all at once: a stream step's few frames (a whole video: :meth:`frame_chunks`)."""
        return next(self.frame_chunks(model, gen, [motion], portrait, crop_only, size=max(len(motion), 1),
                                      workers=1))

    def frame_chunks(self, model: Loaded, gen: Any, motions: Iterable[Any], portrait: Portrait,
                     crop_only: bool, size: int | None = None, workers: int | None = None
                     ) -> Iterator[np.ndarray]:
        """The frames of consecutive motion chunks, ``size`` frames at a time (default: the
        renderer's batch), in order, each batch drawn as soon as the motion chunks taken so far
        hold its frames (a frame is the same whichever batch draws it). ``workers`` batches are
        drawn at once (:func:`~disenttalk.render.background.map_in_order`); default torch's
        thread count, the process's CPUs (a Serve replica of under 2 draws one at a time)."""
        import torch

        from disenttalk.render.background import map_in_order

        portrait = self.framed(model, portrait)
        # into the photo: drawn on its own pixels (up to 512 px a side), so its detail stays
        renderer, scale = self.renderer(model, portrait, sharp=not crop_only)
        size = size or renderer.config.chunk_frames

        def draw(landmarks: np.ndarray) -> np.ndarray:
            frames = renderer.render(landmarks * scale)
            return frames if crop_only or not len(frames) else paste(portrait, frames, still=renderer.portrait)

        def batches() -> Iterator[np.ndarray]:
            pending, drawn = [], False
            for motion in motions:
                # each portrait's own rest (Generator.portrait_rest), the same in both windows
                pending.append(gen.landmarks(motion, portrait.crop_landmarks))
                landmarks = np.concatenate(pending)
                for start in range(0, len(landmarks) - size + 1, size):
                    yield landmarks[start:start + size]
                    drawn = True
                pending = [landmarks[len(landmarks) - len(landmarks) % size:]]
            rest = np.concatenate(pending) if pending else np.zeros((0, topo.NUM_LANDMARKS, 3), np.float32)
            if len(rest) or not drawn:
                yield rest

        yield from map_in_order(draw, batches(), workers or torch.get_num_threads())


def paste(portrait: Portrait, frames: np.ndarray, still: np.ndarray | None = None) -> np.ndarray:
    """Crops [T,S,S,3] put back into the photo [T,H,W,3]; with ``still`` (the crop they were drawn
    on) only what moved, the rest stays the photo's own pixels (``CropTransform.paste``).

    The face box is the same in every frame, so only the photo's rectangle under it is warped
    (CropTransform.paste over the whole photo spent ~50 ms a 512² frame resampling pixels that
    stay the photo's): the same numbers, a fraction of the work.
    """
    tr = portrait.transform
    h, w = portrait.photo.shape[:2]
    half = float(tr.sides[0]) / 2 + 2
    cx, cy = (float(v) for v in tr.centres[0])
    x0, y0 = max(0, int(np.floor(cx - half))), max(0, int(np.floor(cy - half)))
    x1, y1 = min(w, int(np.ceil(cx + half))), min(h, int(np.ceil(cy + half)))
    t = len(frames)
    region = type(tr)(centres=np.repeat(tr.centres - np.array([[x0, y0]]), t, 0),
                      sides=np.repeat(tr.sides, t, 0), size=tr.size, frame_shape=(y1 - y0, x1 - x0))
    out = np.repeat(portrait.photo[None], t, 0)
    out[:, y0:y1, x0:x1] = region.paste(out[:, y0:y1, x0:x1], frames, still=still)
    return out
