"""Renderer speed measurement for ``disenttalk bench face`` (figures are printed, never asserted)."""

from __future__ import annotations

import time

import numpy as np
import torch

from disenttalk.face.editors import close_eyes, open_mouth
from disenttalk.render.renderer import RenderConfig, WarpRenderer


def talking_targets(landmarks: np.ndarray, frames: int) -> np.ndarray:
    """[T,478,3] speech-like targets: the jaw opens and closes, the eyes blink every 25 frames."""
    t = np.arange(frames)
    jaw = 0.12 * (1.0 + np.sin(2.0 * np.pi * t / 8.0))  # about 3 syllables a second at 25 fps
    out = open_mouth(landmarks, jaw)
    blink = np.clip(1.0 - np.abs((t % 25) - 3) / 3.0, 0.0, 1.0)  # 0 → 1 → 0 over 6 frames
    for i in np.flatnonzero(blink):
        out[i] = close_eyes(out[i], float(blink[i]))
    return out.astype(np.float32)


def measure_renderer(
    portrait: np.ndarray,
    landmarks: np.ndarray,
    frames: int = 128,
    repeats: int = 5,
    device: str = "cpu",
    config: RenderConfig | None = None,
) -> dict:
    """Frames/s of ``WarpRenderer.render`` (best of ``repeats``, wall and CPU) on talking and still targets."""
    start = time.perf_counter()
    renderer = WarpRenderer(portrait, landmarks, device=device, config=config)
    setup_s = time.perf_counter() - start
    cases = {
        "talking": talking_targets(landmarks, frames),  # warp + mouth and eyelid painting
        "still": np.repeat(landmarks[None], frames, 0).astype(np.float32),  # warp only
    }
    result = {
        "height": portrait.shape[0],
        "width": portrait.shape[1],
        "frames": frames,
        "threads": torch.get_num_threads(),
        "device": device,
        "setup_s": round(setup_s, 3),
    }
    for name, targets in cases.items():
        renderer.render(targets[: renderer.config.chunk_frames])  # warm-up
        wall = cpu = float("inf")
        for _ in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            renderer.render(targets)
            if renderer.device.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu = min(wall, time.perf_counter() - w0), min(cpu, time.process_time() - c0)
        # Frames per CPU-second is what a busy shared machine still measures faithfully.
        result[f"{name}_fps"] = round(frames / wall, 1)
        result[f"{name}_fps_per_cpu_s"] = round(frames / cpu, 1)
    return result
