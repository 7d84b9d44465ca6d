"""Per-clip work of the ``preprocess`` stage, run inside Ray Data actors, and its config.

One :class:`ClipProcessor` actor holds the expensive state (MediaPipe graph, audio frontend)
and turns manifest rows into clip records: hash → decode → checks → crop/align → track →
audio features → atomic write. Every failure becomes a reject with a reason; nothing raises
out of the actor, so one bad file never stops the job.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from disenttalk.config import StrictConfig
from disenttalk.model.config import AudioConfig
from workflows.platform import clipstore, storage
from workflows.platform.raycluster import RayConfig
from workflows.platform.tracking import MlflowConfig


class ActorPoolConfig(StrictConfig):
    """Ray Data actor pool for the per-clip step (``ActorPoolStrategy(min_size, max_size)``)."""

    min_size: int = Field(1, ge=1)
    max_size: int = Field(2, ge=1)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)  # MediaPipe here runs on CPU; a GPU frontend may use one
    batch_size: int = Field(1, ge=1)  # clips per call; 1 balances uneven clip lengths best

    @model_validator(mode="after")
    def _check(self) -> ActorPoolConfig:
        if self.max_size < self.min_size:
            raise ValueError("max_size must be >= min_size")
        return self


class FilterConfig(StrictConfig):
    """When a clip is rejected (the reasons in ``clipstore.REJECT_REASONS``)."""

    min_duration_s: float = Field(1.0, ge=0)  # too_short below this
    max_no_face_fraction: float = Field(0.2, ge=0, le=1)  # no_face if more frames lack a face
    min_audio_rms: float = Field(3e-3, ge=0)  # silent below this (≈ -50 dBFS)
    max_av_mismatch_s: float = Field(0.2, ge=0)  # av_mismatch if audio and video differ more


class FaceConfig(StrictConfig):
    """Tracking and the aligned crop the landmarks are expressed in."""

    crop_size: int = Field(256, gt=0)  # the paper's 256×256 crops
    crop_margin: float = Field(0.3, ge=0)  # box side = landmark extent × (1 + 2·margin)
    crop_smooth: float = Field(4.0, ge=0)  # Gaussian σ in frames for box centre and side
    min_confidence: float = Field(0.5, ge=0, le=1)


def framing(recorded: Mapping[str, Any] | None = None) -> tuple[int, float]:
    """(crop size, crop margin) of the face crop: as a bundle records it (``meta["framing"]``,
    from the store it was trained on), else preprocessing's defaults."""
    defaults, recorded = FaceConfig(), recorded or {}
    return (int(recorded.get("crop_size", defaults.crop_size)),
            float(recorded.get("crop_margin", defaults.crop_margin)))


class PreprocessConfig(StrictConfig):
    """Config of ``disenttalk preprocess`` (``configs/preprocess.yaml``)."""

    ray: RayConfig = RayConfig()
    actors: ActorPoolConfig = ActorPoolConfig()
    filters: FilterConfig = FilterConfig()
    face: FaceConfig = FaceConfig()
    audio: AudioConfig = AudioConfig()
    mlflow: MlflowConfig = MlflowConfig(experiment="disenttalk-preprocess")


def fingerprint(cfg: PreprocessConfig) -> str:
    """What decides a clip's fate: the settings that filter and shape clips (``filters``,
    ``face``, ``audio``), the package version and this module's and the media reader's source.
    A rejected clip is tried again when it changes."""
    from pathlib import Path

    import disenttalk
    from disenttalk import media

    digest = hashlib.sha256(json.dumps(
        {k: cfg.to_dict()[k] for k in ("filters", "face", "audio")}, sort_keys=True).encode())
    digest.update(getattr(disenttalk, "__version__", "").encode())
    for source in (__file__, media.__file__):
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]


class Reject(Exception):
    """A clip that fails a check; ``reason`` is one of ``clipstore.REJECT_REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# Columns of the small result rows the actors return to the driver.
RESULT_COLUMNS = ["status", "clip_id", "content_hash", "frames", "seconds", "row"]


def rms(audio: np.ndarray) -> float:
    """Root mean square of float audio in [-1, 1]."""
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Trim or zero-pad ``audio`` to exactly ``samples`` (the video's duration)."""
    if len(audio) >= samples:
        return audio[:samples]
    return np.pad(audio, (0, samples - len(audio)))


class ClipProcessor:
    """Ray Data callable class: manifest rows (pandas) → result rows; one MediaPipe graph per actor."""

    def __init__(self, config_json: str, out: str, done_hashes: frozenset[str]) -> None:
        from disenttalk.face.tracker import FaceTracker

        self.cfg = PreprocessConfig.from_json(config_json)
        self.out = out
        self.done = done_hashes
        self.tracker = FaceTracker(min_confidence=self.cfg.face.min_confidence)
        from disenttalk.audio import make_frontend

        self.frontend = make_frontend(self.cfg.audio)  # a frontend that cannot load fails the actor
        self.fingerprint = fingerprint(self.cfg)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = [self.process(row) for row in batch.to_dict("records")]
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)

    def process(self, row: dict[str, Any]) -> dict[str, Any]:
        """One manifest row → ``ok`` / ``skipped`` / ``rejected`` result row."""
        start = time.perf_counter()
        clip_id, uri = str(row["clip_id"]), str(row["uri"])
        content_hash = ""
        try:
            try:
                data = storage.read_bytes(uri)
            except (OSError, ValueError) as exc:
                raise Reject("unreadable", f"cannot read {uri}: {exc}") from exc
            content_hash = hashlib.sha256(data).hexdigest()
            if content_hash in self.done:
                return self._result("skipped", clip_id, content_hash, 0, start, {})
            record = self.build(row, data, content_hash)
            name = clipstore.write_record(self.out, record)
            return self._result(
                "ok", clip_id, content_hash, record.num_frames, start, record.index_row(name)
            )
        except Reject as rej:
            reject = {"reason": rej.reason, "detail": rej.detail}
        except Exception as exc:  # a bug or an odd file must not stop the job: record it
            reject = {"reason": "error", "detail": f"{type(exc).__name__}: {exc}"}
        reject.update(clip_id=clip_id, source_uri=uri, content_hash=content_hash,
                      fingerprint=self.fingerprint)
        return self._result("rejected", clip_id, content_hash, 0, start, reject)

    @staticmethod
    def _result(status, clip_id, content_hash, frames, start, row) -> dict[str, Any]:
        return {
            "status": status,
            "clip_id": clip_id,
            "content_hash": content_hash,
            "frames": int(frames),
            "seconds": time.perf_counter() - start,
            "row": json.dumps(row),
        }

    def build(self, row: dict[str, Any], data: bytes, content_hash: str) -> clipstore.ClipRecord:
        """Decode, check, align, track and featurise one clip (raises :class:`Reject`)."""
        from disenttalk.media import SAMPLE_RATE, MediaError, read_video

        flt = self.cfg.filters
        try:
            with storage.local_copy(row["uri"], data) as path:  # at the model's frame rate
                video = read_video(path, fps=self.cfg.audio.fps)
        except MediaError as exc:
            raise Reject("unreadable", str(exc)) from exc
        frames, fps = video.frames, video.fps  # [T,H,W,3], Hz
        duration = video.duration
        if duration < flt.min_duration_s:
            raise Reject("too_short", f"{duration:.2f}s < {flt.min_duration_s}s")
        if video.audio is None or video.audio.size == 0:
            raise Reject("silent", "no audio stream")
        level = rms(video.audio)
        if level < flt.min_audio_rms:
            raise Reject("silent", f"audio RMS {level:.2e} < {flt.min_audio_rms:.2e}")
        gap = abs(len(video.audio) / SAMPLE_RATE - duration)
        if gap > flt.max_av_mismatch_s:
            raise Reject("av_mismatch", f"audio and video lengths differ by {gap:.2f}s")

        landmarks, valid, extra = self.track_aligned(frames)  # [T,478,3], [T]
        missing = 1.0 - float(valid.mean())
        if missing > flt.max_no_face_fraction:
            raise Reject("no_face", f"no face in {missing:.0%} of {len(valid)} frames")

        audio = fit_length(video.audio, int(round(len(frames) / fps * SAMPLE_RATE)))
        features = np.asarray(self.frontend(audio, SAMPLE_RATE, len(frames)), np.float32)
        return clipstore.ClipRecord(
            clip_id=str(row["clip_id"]),
            speaker=str(row.get("speaker", "")),
            language=str(row.get("language", "")),
            split=str(row.get("split", "train")),
            sentence=str(row.get("sentence", "")),
            fps=float(fps),
            landmarks=landmarks.astype(np.float32),
            valid=valid.astype(bool),
            audio=audio.astype(np.float32),
            sample_rate=SAMPLE_RATE,
            features=features,
            source_uri=str(row["uri"]),
            content_hash=content_hash,
            extra=extra,
        )

    def track_aligned(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """Landmarks [T,478,3] in the aligned ``crop_size``² crop, validity [T], crop boxes.

        Tracking runs on the source frames and the landmarks are then mapped into the smoothed
        crop (the same boxes the renderer's paste-back uses), which equals tracking the crops
        without resampling every frame twice.
        """
        from disenttalk.face.crop import crop_boxes

        tracks = self.tracker.track(frames)
        if not tracks.valid.any():
            return tracks.landmarks, tracks.valid, {}
        face = self.cfg.face
        box = crop_boxes(tracks.landmarks, frames.shape[1:3], size=face.crop_size,
                         margin=face.crop_margin, smooth=face.crop_smooth)  # fmt: skip
        extra = {
            "crop_centres": box.centres.astype(np.float32),  # [T,2] source pixels
            "crop_sides": box.sides.astype(np.float32),  # [T]
            "frame_shape": np.asarray(box.frame_shape, np.int64),  # (H, W)
        }
        return box.apply(tracks.landmarks), tracks.valid, extra
