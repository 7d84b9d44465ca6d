"""One clip of ``evaluate`` (a Ray task): generate motion from its audio, render it onto the
reference image, re-track the video and score it, with the truth and the baselines, against the
tracked truth."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from workflows.evaluation.config import SYSTEM, EvaluateConfig, clip_seed
from workflows.evaluation.lips import fill_gaps, landmark_lips
from workflows.evaluation.reference import tracked_reference
from workflows.platform import clipstore, storage


@dataclass(frozen=True)
class ClipTruth:
    """A clip as recorded, cut to the frames both its video and its record hold."""

    clip_id: str
    language: str
    split: str
    fps: float
    frames: np.ndarray  # uint8 [T,H,W,3], at the record's frame rate
    landmarks: np.ndarray  # tracked [T,478,3]
    first_valid: bool  # whether the first frame's landmarks hold a face
    audio: np.ndarray  # the samples of those T frames
    sample_rate: int

    @property
    def num_frames(self) -> int:
        """T."""
        return len(self.frames)

    @property
    def seconds(self) -> float:
        """T / fps."""
        return self.num_frames / self.fps


@dataclass(frozen=True)
class Encoded:
    """The truth's landmarks encoded with the bundle's morphable model."""

    expression: np.ndarray
    pose: np.ndarray
    identity: np.ndarray


@dataclass(frozen=True)
class Rendered:
    """Motion rendered onto the reference image, and the landmarks re-tracked on the video."""

    frames: np.ndarray
    landmarks: np.ndarray
    motion: Any = None  # disenttalk.generate.motion.Motion, where the generator sampled it


def read_truth(data: str, row: dict) -> ClipTruth:
    """The clip's record and video frames (at the record's frame rate, as preprocessing resampled it)."""
    from disenttalk import media

    rec = clipstore.read_record(data, row)
    fps = float(rec.fps)
    with storage.local_copy(rec.source_uri) as path:
        frames = media.read_video(path, with_audio=False, fps=fps).frames
    t = min(len(frames), rec.num_frames)
    return ClipTruth(clip_id=rec.clip_id, language=rec.language, split=rec.split, fps=fps,
                     frames=frames[:t], landmarks=rec.landmarks[:t], first_valid=bool(rec.valid[0]),
                     audio=rec.audio[: int(round(t / fps * rec.sample_rate))], sample_rate=rec.sample_rate)


class ClipRenderer:
    """Samples motion from the clip's audio with the config's sampler settings and the clip's
    seed, renders it onto the reference image and re-tracks the rendered frames."""

    def __init__(self, gen: Any, truth: ClipTruth, image: np.ndarray, image_landmarks: np.ndarray,
                 cfg: EvaluateConfig) -> None:
        self.gen, self.truth, self.image, self.image_landmarks = gen, truth, image, image_landmarks
        self.seed = clip_seed(cfg.seed, truth.clip_id)
        self.sampling = dict(steps=cfg.steps, sampler=cfg.sampler, guidance=cfg.guidance, eta=cfg.eta,
                             seed=self.seed, spacing=cfg.spacing)

    def track(self, motion: Any) -> Rendered:
        """Render ``motion`` (cut to the clip's length) and re-track it."""
        from disenttalk.face.tracker import FaceTracker

        frames = self.gen.render(motion, self.image, self.image_landmarks)[: self.truth.num_frames]
        return Rendered(frames, FaceTracker().track(frames).landmarks, motion)

    def sample(self, controls: Any, **over: Any) -> Rendered:
        """Sample motion for the clip's audio under ``controls`` (``over``: other sampler settings)."""
        truth = self.truth
        motion = self.gen.motion(truth.audio, truth.sample_rate, controls=controls, **{**self.sampling, **over})
        return self.track(motion)


def told_blink_rate(cfg: EvaluateConfig, info: dict[str, Any]) -> float | None:
    """The blink rate the model is told: the speaker's (capped) under ``blink_reference: speaker``."""
    from disenttalk.generate.motion import MAX_BLINK_RATE

    told = info.get("reference_blink_rate") if cfg.blink_reference == "speaker" else None
    return None if told is None else min(float(told), MAX_BLINK_RATE)


def sample_model(renderer: ClipRenderer, cfg: EvaluateConfig, blink_rate: float | None) -> tuple[Rendered, list[float]]:
    """The model's render, and the blink rates of its ``blink_samples − 1`` further samples."""
    from disenttalk.generate.motion import Controls
    from disenttalk.metrics.landmarks import landmark_blink_rate

    model = renderer.sample(Controls(blink_rate=blink_rate))
    extra = [landmark_blink_rate(renderer.sample(Controls(blink_rate=blink_rate), seed=renderer.seed + k).landmarks,
                                 renderer.truth.fps)
             for k in range(1, cfg.blink_samples)]
    return model, extra


def system_traces(renderer: ClipRenderer, model: Rendered, code: Encoded,
                  lips: Callable[[np.ndarray], np.ndarray | None], cfg: EvaluateConfig) -> dict[str, Any]:
    """The scored traces: the model's and the truth's, and with ``baselines`` the oracle (the
    truth's own expression through encode → render → re-track, like the model's), a still face
    and the truth delayed by ``shift_seconds``."""
    from disenttalk.generate.motion import Motion
    from disenttalk.metrics import baselines
    from disenttalk.metrics.clip import Trace

    t, fps = renderer.truth.num_frames, renderer.truth.fps
    truth = Trace(landmarks=renderer.truth.landmarks, lip=lips(renderer.truth.landmarks),
                  frames=renderer.truth.frames)
    systems = {SYSTEM: Trace(landmarks=model.landmarks, lip=lips(model.landmarks), frames=model.frames),
               "truth": truth}
    if cfg.baselines:
        oracle = renderer.track(Motion(code.expression.astype(np.float32), np.zeros((t, 6), np.float32), fps))
        systems["oracle"] = Trace(landmarks=oracle.landmarks, lip=lips(oracle.landmarks), frames=oracle.frames)
        shift = baselines.shift_frames(fps, cfg.shift_seconds)
        parts = (truth.landmarks, truth.lip, truth.frames)
        systems["still"] = Trace(*(baselines.still(x) for x in parts))
        systems["shifted"] = Trace(*(baselines.delayed(x, shift) for x in parts))
    return systems


def score_systems(systems: dict[str, Any], fidelity: Any, truth: ClipTruth, evaluator: Any,
                  cfg: EvaluateConfig, info: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Every system's metrics against the truth's trace (PSNR/SSIM for the model only)."""
    from disenttalk.metrics import clip

    t, fps = truth.num_frames, truth.fps
    score_kw = dict(fps=fps, audio_features=evaluator.frontend(truth.audio, truth.sample_rate, num_frames=t),
                    expert=evaluator.expert, pauses=clip.pause_frames(truth.audio, truth.sample_rate, t, fps),
                    truth_blink_rate=info.get("blink_rate"),
                    cpbd_stride=cfg.cpbd_stride, image_stride=cfg.image_stride,
                    max_offset=cfg.max_offset, window=evaluator.window)
    return {name: clip.score_clip(trace, systems["truth"], fidelity=fidelity if name == SYSTEM else None,
                                  **score_kw)
            for name, trace in systems.items()}


def add_decoded_lmd(scores: dict[str, dict[str, float]], morphable: Any, code: Encoded, model_expression: np.ndarray,
                    truth: ClipTruth, cfg: EvaluateConfig) -> None:
    """``lmd_decoded``: LMD of an expression sequence decoded with the clip's own identity and pose
    (no render), for the model and, with ``baselines``, the oracle and the still face."""
    from disenttalk.metrics import baselines
    from disenttalk.metrics.landmarks import lmd

    def decoded_lmd(expr: np.ndarray) -> float:
        n = min(len(expr), truth.num_frames)
        return lmd(morphable.decode(expr[:n], code.pose[:n], code.identity), truth.landmarks[:n])

    scores[SYSTEM]["lmd_decoded"] = decoded_lmd(model_expression)
    if cfg.baselines:
        scores["oracle"]["lmd_decoded"] = decoded_lmd(code.expression)
        scores["still"]["lmd_decoded"] = decoded_lmd(baselines.still(code.expression))


def pool_model_blinks(scores: dict[str, dict[str, float]], extra_rates: list[float], blink_rate: float | None,
                      info: dict[str, Any]) -> None:
    """The model's blink rate as the mean over its samples (and its error against the truth's),
    and the rate it was told (per clip in clips.json; not averaged)."""
    from disenttalk.metrics.landmarks import blink_rate_error

    model = scores[SYSTEM]
    if extra_rates and math.isfinite(model["blink_rate"]):
        model["blink_rate"] = float(np.mean([model["blink_rate"], *extra_rates]))
        truth_rate = info.get("blink_rate", scores["truth"]["blink_rate"])
        model["blink_rate_error"] = blink_rate_error(model["blink_rate"], truth_rate)
    if blink_rate is not None:
        model["told_blink_rate"] = blink_rate


def counted_truth_blinks(truth: ClipTruth, info: dict[str, Any]) -> tuple[float, float]:
    """(blinks, seconds) of the truth as counted: the corpus's own where it has them, else tracked
    (a split's rate interval pools them)."""
    from disenttalk.metrics.landmarks import landmark_blink_count

    if "blinks" in info:
        return info["blinks"], info["seconds"]
    return landmark_blink_count(truth.landmarks, truth.fps), truth.seconds


def evaluate_clip(row: dict, data: str, bundle_files: dict[str, bytes], expert_files: dict[str, bytes],
                  cfg: EvaluateConfig, info: dict[str, Any]) -> dict:
    """Generate, render, re-track and score one clip; returns per-system metrics and plot curves.

    The bundle and the evaluator come as packed folders (``storage.pack_dir``), so the task runs
    on any node; each machine writes them to its temp dir once."""
    from disenttalk.generate.generator import Generator
    from disenttalk.generate.motion import Controls
    from disenttalk.metrics import clip
    from disenttalk.metrics.sync import load_evaluator

    gen = Generator.from_bundle(storage.unpack_dir(bundle_files), device=cfg.device)
    bundle = gen.bundle
    evaluator = load_evaluator(storage.unpack_dir(expert_files))
    truth = read_truth(data, row)
    reference, image, image_landmarks = tracked_reference(
        cfg, truth.clip_id, info, truth.frames[0], truth.landmarks[0] if truth.first_valid else None)
    renderer = ClipRenderer(gen, truth, image, image_landmarks, cfg)
    blink_rate = told_blink_rate(cfg, info)
    model, extra_rates = sample_model(renderer, cfg, blink_rate)
    code = Encoded(*bundle.morphable.encode(fill_gaps(truth.landmarks)))
    fidelity = None
    if cfg.fidelity:  # the source's own pose and eyes: PSNR/SSIM against its frames
        posed = renderer.sample(Controls(eyes=code.expression, pose=code.pose))
        fidelity = clip.Trace(landmarks=posed.landmarks, frames=posed.frames)

    def lips(x: np.ndarray) -> np.ndarray | None:  # the evaluator's own lip dims: one yardstick for every bundle
        return landmark_lips(x, bundle.morphable, evaluator.lip or bundle.split.lip, evaluator.norm)

    systems = system_traces(renderer, model, code, lips, cfg)
    scores = score_systems(systems, fidelity, truth, evaluator, cfg, info)
    add_decoded_lmd(scores, bundle.morphable, code, model.motion.expression, truth, cfg)
    pool_model_blinks(scores, extra_rates, blink_rate, info)
    return {"clip_id": truth.clip_id, "language": truth.language, "split": truth.split, "fps": truth.fps,
            "reference": reference, "scores": scores, "truth_blinks": counted_truth_blinks(truth, info),
            "curves": {name: {k: v.tolist() for k, v in clip.curves(trace).items()}
                       for name, trace in systems.items()}}
