"""Per-clip work of the ``preprocess`` stage, run inside Ray Data actors, and its config.

One :class:`ClipProcessor` actor holds the expensive state (MediaPipe graph, audio frontend)
and turns manifest rows into clip records: hash → decode → checks → crop/align → track →
audio features → atomic write. Every failure becomes a reject with a reason; nothing raises
out of the actor, so one bad file never stops the job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from disenttalk.config import StrictConfig
from disenttalk.constants import SAMPLE_RATE
from disenttalk.face import crop
from disenttalk.model.config import AudioConfig
from workflows.platform import clipstore, storage
from workflows.platform.raycluster import RayConfig
from workflows.platform.tracking import MlflowConfig
from workflows.preprocess import segments
from workflows.preprocess.segments import SegmentConfig


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

    crop_size: int = Field(crop.CROP_SIZE, gt=0)  # the paper's 256×256 crops
    crop_margin: float = Field(crop.CROP_MARGIN, ge=0)  # box side = landmark extent × (1 + 2·margin)
    crop_smooth: float = Field(4.0, ge=0)  # Gaussian σ in frames for box centre and side
    min_confidence: float = Field(0.5, ge=0, le=1)
    max_faces: int = Field(2, ge=1)  # faces tracked at once; one person is followed (FaceTracker)



class PreprocessConfig(StrictConfig):
    """Config of ``disenttalk preprocess`` (``configs/preprocess.yaml``)."""

    ray: RayConfig = RayConfig()
    actors: ActorPoolConfig = ActorPoolConfig()
    filters: FilterConfig = FilterConfig()
    face: FaceConfig = FaceConfig()
    segments: SegmentConfig = SegmentConfig()
    audio: AudioConfig = AudioConfig()
    mlflow: MlflowConfig = MlflowConfig(experiment="disenttalk-preprocess")


def fingerprint(cfg: PreprocessConfig) -> str:
    """What decides a clip's fate: the settings that filter and shape clips (``filters``,
    ``face``, ``segments``, ``audio``), the package version and the source of this module, the
    segmenter and the media reader.
    A rejected clip is tried again when it changes."""
    from pathlib import Path

    import disenttalk
    from disenttalk import media

    digest = hashlib.sha256(json.dumps(
        {k: cfg.to_dict()[k] for k in ("filters", "face", "segments", "audio")}, sort_keys=True).encode())
    digest.update(getattr(disenttalk, "__version__", "").encode())
    for source in (__file__, segments.__file__, media.__file__):
        digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]


class Reject(Exception):
    """A clip that fails a check; ``reason`` is one of ``clipstore.REJECT_REASONS``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


# Columns of the small result rows the actors return to the driver.
RESULT_COLUMNS = ["status", "clip_id", "content_hash", "frames", "seconds", "row", "node"]


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """Trim or zero-pad ``audio`` to exactly ``samples`` (the video's duration)."""
    if len(audio) >= samples:
        return audio[:samples]
    return np.pad(audio, (0, samples - len(audio)))


def _node_id() -> str:
    """This process's Ray node id ("" outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - a label for the summary, never worth failing a clip
        return ""


class ClipProcessor:
    """Ray Data callable class: manifest rows (pandas) → result rows; one MediaPipe graph per actor.

    A source video yields one result row per clip kept from it (a long video: several segments,
    see :mod:`workflows.preprocess.segments`), or one ``rejected`` / ``skipped`` row.
    """

    def __init__(self, cfg: PreprocessConfig, out: str, done_hashes: frozenset[str]) -> None:
        from disenttalk.face.tracker import FaceTracker

        self.cfg = cfg
        self.out = out
        self.done = done_hashes
        face = self.cfg.face
        self.tracker = FaceTracker(max_faces=face.max_faces, min_confidence=face.min_confidence)
        from disenttalk.audio import make_frontend

        self.frontend = make_frontend(self.cfg.audio)  # a frontend that cannot load fails the actor
        self.fingerprint = fingerprint(self.cfg)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from disenttalk.face.tracker import quiet_native_logs

        # MediaPipe's calculators log from their own threads, some after a frame's result is
        # back: keep native chatter off the console for the whole batch (a failure is a reject
        # row either way; DISENTTALK_VERBOSE=1 shows it all).
        with quiet_native_logs():
            rows = [result for row in batch.to_dict("records") for result in self.process(row)]
        return pd.DataFrame(rows, columns=RESULT_COLUMNS)

    def process(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        """One manifest row → ``ok`` rows (one per clip kept) / a ``skipped`` / a ``rejected`` row.

        Clips are written as the video streams through; if the source fails part-way, those
        already written are deleted again, so a rejected source leaves nothing in the store."""
        start = time.perf_counter()
        clip_id, uri = str(row["clip_id"]), str(row["uri"])
        content_hash, results = "", []
        try:
            with contextlib.ExitStack() as stack:
                try:  # S3 sources are streamed to a local temporary file, never held in memory
                    path = stack.enter_context(storage.local_copy(uri))
                    content_hash = storage.file_sha256(path)
                except (OSError, ValueError) as exc:
                    raise Reject("unreadable", f"cannot read {uri}: {exc}") from exc
                if content_hash in self.done:
                    return [self._result("skipped", clip_id, content_hash, 0, start, {})]
                for part, record in self.build(row, path, content_hash):
                    name = clipstore.write_record(self.out, record, part)
                    results.append(self._result("ok", record.clip_id, content_hash,
                                                record.num_frames, start, record.index_row(name)))
            return results
        except Reject as rej:
            reject = {"reason": rej.reason, "detail": rej.detail}
        except Exception as exc:  # a bug or an odd file must not stop the job: record it
            reject = {"reason": "error", "detail": f"{type(exc).__name__}: {exc}"}
        for result in results:
            storage.delete(storage.join(self.out, json.loads(result["row"])["record"]))
        reject.update(clip_id=clip_id, source_uri=uri, content_hash=content_hash,
                      fingerprint=self.fingerprint)
        return [self._result("rejected", clip_id, content_hash, 0, start, reject)]

    @staticmethod
    def _result(status, clip_id, content_hash, frames, start, row) -> dict[str, Any]:
        return {
            "status": status,
            "clip_id": clip_id,
            "content_hash": content_hash,
            "frames": int(frames),
            "seconds": time.perf_counter() - start,
            "row": json.dumps(row),
            "node": _node_id(),  # which Ray node did the work (the stage summary counts them)
        }

    def build(self, row: dict[str, Any], path, content_hash: str
              ) -> Iterator[tuple[int | None, clipstore.ClipRecord]]:
        """Decode, check, track, segment and featurise one source video: (part number, record)
        for each clip kept, in time order; part is None when the video gives exactly one clip.
        Raises :class:`Reject`.

        Frames are decoded and tracked ``segments.chunk_frames`` at a time at the model's frame
        rate and audio is read alongside them, so memory does not grow with the video's length.
        """
        from disenttalk.media import AudioStream

        stream = self.open_video(path)
        fps = stream.fps
        with AudioStream(path) as audio:
            at = 0  # audio samples read
            for part, seg, shape in self.clip_spans(stream):
                lo, hi = (int(round(f / fps * SAMPLE_RATE)) for f in (seg.start, seg.stop))
                audio.read(lo - at)  # skip what lies between clips
                sound, at = fit_length(audio.read(hi - lo), hi - lo), hi
                yield part, self.record(row, seg, sound, part, content_hash, fps, shape)

    def open_video(self, path) -> Any:
        """The video's frame stream at the model's frame rate, once its length and audio pass
        the filters. Raises :class:`Reject`."""
        from disenttalk.media import FrameStream, MediaError, NoAudioStream, audio_level

        flt = self.cfg.filters
        try:
            stream = FrameStream(path, fps=self.cfg.audio.fps)
            samples, level = audio_level(path)
        except NoAudioStream as exc:
            raise Reject("silent", "no audio stream") from exc
        except MediaError as exc:
            raise Reject("unreadable", str(exc)) from exc
        duration = stream.duration
        if duration < flt.min_duration_s:
            raise Reject("too_short", f"{duration:.2f}s < {flt.min_duration_s}s")
        if level < flt.min_audio_rms:
            raise Reject("silent", f"audio RMS {level:.2e} < {flt.min_audio_rms:.2e}")
        gap = abs(samples / SAMPLE_RATE - duration)
        if gap > flt.max_av_mismatch_s:
            raise Reject("av_mismatch", f"audio and video lengths differ by {gap:.2f}s")
        return stream

    def clip_spans(self, stream: Any) -> Iterator[tuple[int | None, segments.Segment, tuple[int, int]]]:
        """Track the stream a chunk at a time and cut it into clips: (part number, segment,
        frame (H, W) at fps, upright) for each clip kept, as soon as it is known to be one.
        Raises :class:`Reject` when no clip is kept."""
        flt = self.cfg.filters
        segmenter = segments.Segmenter(stream.fps, self.cfg.segments, flt.min_duration_s)
        detector = segments.CutDetector(self.cfg.segments.cut_threshold)

        def good(segs: list[segments.Segment]) -> list[segments.Segment]:
            return [s for s in segs if 1.0 - s.valid.mean() <= flt.max_no_face_fraction]

        shape = (0, 0)
        part, found, pending = 0, 0, []  # found: frames with the face
        for first, frames in stream.chunks(self.cfg.segments.chunk_frames):
            shape = frames.shape[1:3]
            tracks = self.tracker.track(frames, resume=first > 0)
            found += int(tracks.valid.sum())
            pending += good(segmenter.push(tracks.landmarks, tracks.valid, detector.update(frames)))
            while len(pending) > 1:  # a second clip exists: the first is part 0, and so on
                yield part, pending.pop(0), shape
                part += 1
        pending += good(segmenter.finish())
        if part == 0 and not pending:
            missing = 1.0 - found / len(stream)
            if missing > flt.max_no_face_fraction:
                raise Reject("no_face", f"no face in {missing:.0%} of {len(stream)} frames")
            raise Reject("too_short", f"no span of >= {flt.min_duration_s}s with the face "
                                      f"and without a shot cut ({segmenter.cuts} cuts)")
        if part == 0 and len(pending) == 1:  # the usual short clip: keeps its manifest id
            yield None, pending[0], shape
            return
        for seg in pending:
            yield part, seg, shape
            part += 1

    def record(self, row: dict[str, Any], seg, audio: np.ndarray, part: int | None,
               content_hash: str, fps: float, frame_shape: tuple[int, int]) -> clipstore.ClipRecord:
        """The store record of one clip: landmarks in its aligned crop, audio and features."""
        lms, extra = self.align(seg.landmarks, frame_shape)
        extra["span"] = np.asarray([seg.start, seg.stop], np.int64)  # source frames at fps
        features = np.asarray(self.frontend(audio, SAMPLE_RATE, len(seg.valid)), np.float32)
        return clipstore.ClipRecord(
            clip_id=str(row["clip_id"]) if part is None else f"{row['clip_id']}-{part:03d}",
            speaker=str(row.get("speaker", "")),
            language=str(row.get("language", "")),
            split=str(row.get("split", "train")),
            sentence=str(row.get("sentence", "")) if part is None else "",
            fps=float(fps),
            landmarks=lms.astype(np.float32),
            valid=seg.valid.astype(bool),
            audio=audio.astype(np.float32),
            sample_rate=SAMPLE_RATE,
            features=features,
            source_uri=str(row["uri"]),
            content_hash=content_hash,
            source_clip_id=str(row["clip_id"]),
            start_s=seg.start / fps,
            extra=extra,
        )

    def align(self, landmarks: np.ndarray, frame_shape: tuple[int, int]) -> tuple[np.ndarray, dict]:
        """Landmarks [T,478,3] mapped into the aligned ``crop_size``² crop, and the crop boxes.

        Tracking runs on the source frames and the landmarks are then mapped into the smoothed
        crop (the same boxes the renderer's paste-back uses), which equals tracking the crops
        without resampling every frame twice.
        """
        from disenttalk.face.crop import crop_boxes

        face = self.cfg.face
        box = crop_boxes(landmarks, frame_shape, size=face.crop_size,
                         margin=face.crop_margin, smooth=face.crop_smooth)  # fmt: skip
        extra = {
            "crop_centres": box.centres.astype(np.float32),  # [T,2] source pixels
            "crop_sides": box.sides.astype(np.float32),  # [T]
            "frame_shape": np.asarray(box.frame_shape, np.int64),  # (H, W)
        }
        return box.apply(landmarks), extra
