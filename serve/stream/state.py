"""The generator side of a stream: its state as plain CPU data, opening a stream and one step.

The state travels between the ingress (CPU only, no torch needed) and any generator replica with
every step, so it holds numbers, strings and numpy arrays only: :func:`detach` moves a
:class:`~disenttalk.generate.MotionStream`'s tensors to CPU numpy and keeps only the fields that
change as audio comes in; :func:`attach` puts them into a stream freshly opened on the replica's
own generator (its sampler, controls and device), tensors back on that device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from serve.stream.protocol import StartMessage, pack_frame

# What changes in a MotionStream as audio is pushed; the rest (generator, sampler, controls,
# blink curve) is rebuilt from the start message on whichever replica runs the next step.
STATE_FIELDS = ("sample_rate", "_audio", "_offset", "_index", "_tail", "_done", "whole")
TENSOR_FIELDS = ("_tail", "whole")


def _cpu(value: Any) -> Any:
    """A torch tensor (on any device) as a CPU numpy array; anything else as it is."""
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    return value


def detach(stream: Any) -> dict[str, Any]:
    """A MotionStream's changing state as CPU data (small: the audio of one window, a tail)."""
    return {k: _cpu(getattr(stream, k)) for k in STATE_FIELDS}


def attach(state: dict[str, Any], fresh: Any) -> Any:
    """``fresh`` (a MotionStream just opened with the stream's settings) carrying :func:`detach`'s
    ``state``, its arrays back on ``fresh``'s generator's device as tensors."""
    import torch

    for key, value in state.items():
        if key in TENSOR_FIELDS and value is not None:
            value = torch.as_tensor(np.asarray(value), device=fresh.gen.device)
        setattr(fresh, key, value)
    return fresh


def jpeg(frame: np.ndarray, quality: int) -> bytes:
    """uint8 [H,W,3] → JPEG bytes (libjpeg-turbo through simplejpeg where installed)."""
    from disenttalk.render.jpeg import encode_jpeg

    return encode_jpeg(frame, quality)


def _fresh(model: Any, start: StartMessage, steps: int) -> Any:
    """A new MotionStream of the start message's settings on ``model``'s streaming generator."""
    from serve.engine import controls

    return model.live.open_stream(start.sample_rate, steps=steps, guidance=start.guidance,
                                  seed=start.seed, controls=controls(start))


def open_stream(engine: Any, start: StartMessage) -> dict[str, Any]:
    """A new stream's state (generator side) and its ``ready`` message."""
    model = engine.current()
    steps = start.steps or engine.cfg.stream.steps
    stream = _fresh(model, start, steps)
    plan, fps = model.live.plan, model.live.fps
    ready = {"type": "ready", "fps": fps, "sample_rate": start.sample_rate, "steps": steps,
             "hop_frames": plan.hop, "first_hop_frames": plan.first,
             "look_ahead_frames": plan.look_ahead,
             "latency_s": round((plan.first + plan.look_ahead + plan.margin) / fps, 3),
             "model_version": model.info["version"]}
    return {"stream": detach(stream), "start": start.model_dump(exclude={"api_key"}), "steps": steps,
            "frames": 0, "ready": ready}


def needs_portrait() -> Iterator[dict[str, Any]]:
    """What a replica that has not seen the stream's portrait answers a step with."""
    yield {"need_portrait": True}


def step_stream(engine: Any, state: dict[str, Any], audio: np.ndarray, final: bool,
                portrait: Any) -> Iterator[dict[str, Any]]:
    """Push audio (and flush when ``final``): ``{"frames": [(index, message), ...]}`` as each
    window is rendered, then ``{"state": ...}``, the stream's new state."""
    model = engine.current()
    start = StartMessage(**state["start"])
    stream = attach(state["stream"], _fresh(model, start, state["steps"]))
    motions = stream.push(audio) if len(audio) else []
    if final:
        motions += stream.flush()
    sr, fps = start.sample_rate, model.live.fps
    quality = engine.cfg.stream.jpeg_quality
    frames = state["frames"]
    for motion in motions:
        packets = []
        for k, frame in enumerate(engine.frames(model, model.live, motion, portrait, start.crop_only)):
            i = motion.start + k
            header = {"type": "frame", "index": i, "t": round(i / fps, 4),
                      "audio": [round(i * sr / fps), round((i + 1) * sr / fps)]}
            packets.append((i, pack_frame(header, jpeg(frame, quality))))
        frames += len(packets)
        yield {"frames": packets}
    yield {"state": {**state, "stream": detach(stream), "frames": frames}}
