"""Generate stage: a talking video of a photo speaking an audio file, from a registered model.

``disenttalk generate --model models:/disenttalk@champion --audio speech.wav --image face.jpg
--out talk.mp4``. The face is found in the photo and cut out as a square 256×256 crop (the
framing the model was trained on, same margin as preprocessing); the crop is animated; by
default the animated crop is pasted back into the full photo (soft edges), ``--crop-only``
writes the crop itself. Eyes and head pose can be taken from a reference video.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer


class GenerateError(RuntimeError):
    """A user-facing problem with the inputs (no face, unreadable file...)."""


def load_image(path: str | Path) -> np.ndarray:
    """RGB uint8 [H,W,3] from an image file; unreadable files raise :class:`GenerateError`."""
    from disenttalk import media

    try:
        return media.read_image(path)
    except media.MediaError as exc:
        raise GenerateError(str(exc)) from exc


def face_crop(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
    """(crop uint8 [256,256,3], its landmarks [478,3], CropTransform for one frame)."""
    from disenttalk.face.crop import crop_boxes
    from disenttalk.face.tracker import FaceTracker

    with FaceTracker(static=True) as tracker:
        landmarks = tracker.track_image(image)
    if landmarks is None:
        raise GenerateError("no face found in the image")
    from workflows.clipworker import FaceConfig

    face = FaceConfig()  # the framing preprocessing gives the training clips
    transform = crop_boxes(landmarks[None], image.shape[:2], size=face.crop_size,
                           margin=face.crop_margin, smooth=0)
    crop = transform.crop(image[None])[0]
    # Track the crop itself: the renderer needs landmarks that match the pixels it warps.
    with FaceTracker(static=True) as tracker:
        crop_landmarks = tracker.track_image(crop)
    if crop_landmarks is None:
        crop_landmarks = transform.apply(landmarks[None])[0]
    return crop, crop_landmarks, transform


def reference_motion(video: str | Path, morphable: Any) -> tuple[np.ndarray, np.ndarray]:
    """Expression [T,N] and pose [T,6] of a reference video, encoded with the bundle's model."""
    from disenttalk import media
    from disenttalk.face.tracker import FaceTracker

    clip = media.read_video(video, with_audio=False)
    with FaceTracker() as tracker:
        tracks = tracker.track(clip.frames)
    if not tracks.valid.any():
        raise GenerateError(f"{video}: no face found in the reference video")
    expression, pose, _ = morphable.encode(tracks.landmarks[tracks.valid])
    return expression, pose


def run(
    model: str,
    audio: str,
    image: str,
    out: str,
    *,
    steps: int | None = 25,
    sampler: str = "ddim",
    guidance: float | None = None,
    eta: float | None = None,
    seed: int = 0,
    lip_scale: float = 1.0,
    eye_scale: float = 1.0,
    global_scale: float = 1.0,
    eyes_from: str | None = None,
    pose_from: str | None = None,
    crop_only: bool = False,
) -> dict[str, Any]:
    """Write ``out`` (mp4 with the audio); returns a summary dict."""
    from disenttalk import media
    from disenttalk.generate import Controls, Generator
    from workflows.register import resolve_bundle

    start = time.perf_counter()
    generator = Generator.from_bundle(resolve_bundle(model))
    morphable = generator.bundle.morphable
    eyes: Any = "generate"
    pose: Any = "still"
    if eyes_from or pose_from:
        if morphable is None:
            raise GenerateError("this model has no morphable model: --eyes-from/--pose-from need one")
        if eyes_from:
            eyes = reference_motion(eyes_from, morphable)[0]
        if pose_from:
            pose = reference_motion(pose_from, morphable)[1]
    controls = Controls(lip_scale=lip_scale, eye_scale=eye_scale, global_scale=global_scale,
                        eyes=eyes, pose=pose)
    try:
        speech = media.read_audio(audio)
    except media.MediaError as exc:
        raise GenerateError(str(exc)) from exc
    photo = load_image(image)
    crop, crop_landmarks, transform = face_crop(photo)
    motion = generator.motion(speech, 16000, steps=steps, sampler=sampler, guidance=guidance,
                              eta=eta, seed=seed, controls=controls)
    frames = generator.render(motion, crop, crop_landmarks)
    if not crop_only:
        t = len(frames)
        full = type(transform)(
            centres=np.repeat(transform.centres, t, 0), sides=np.repeat(transform.sides, t, 0),
            size=transform.size, frame_shape=transform.frame_shape,
        )
        frames = full.paste(np.repeat(photo[None], t, 0), frames)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    media.write_video(out, frames, motion.fps, audio=speech, sample_rate=16000)
    return {
        "video": str(out),
        "frames": int(len(frames)),
        "seconds_of_audio": round(len(speech) / 16000, 3),
        "size": list(frames.shape[1:3]),
        "output": "crop" if crop_only else "pasted into the photo",
        "elapsed_s": round(time.perf_counter() - start, 2),
    }


def cli(
    model: str = typer.Option(..., help="models:/disenttalk@champion, models:/NAME/VERSION, a bundle dir or s3:// URI."),
    audio: str = typer.Option(..., help="Speech: any audio or video file (resampled to 16 kHz mono)."),
    image: str = typer.Option(..., help="Portrait photo with one face."),
    out: str = typer.Option(..., help="Output mp4."),
    steps: int = typer.Option(25, help="Sampler steps (DDIM); DDPM uses all T."),
    sampler: str = typer.Option("ddim", help="ddim | ddpm."),
    guidance: float | None = typer.Option(None, help="Classifier-free guidance scale s (Eq. 9); default from the model."),
    eta: float | None = typer.Option(None, help="DDIM eta (0 deterministic ... 1 stochastic); default from the model."),
    seed: int = typer.Option(0, help="Noise seed (same seed, same video)."),
    lip_scale: float = typer.Option(1.0, help="Lip motion intensity."),
    eye_scale: float = typer.Option(1.0, help="Eye motion intensity."),
    global_scale: float = typer.Option(1.0, help="Global expression intensity."),
    eyes_from: str | None = typer.Option(None, help="Reference video whose eye motion is kept."),
    pose_from: str | None = typer.Option(None, help="Reference video whose head motion is applied."),
    crop_only: bool = typer.Option(False, help="Write the 256x256 face crop instead of pasting it back."),
) -> None:
    """Make a talking video of IMAGE speaking AUDIO."""
    from disenttalk.media import MediaError

    try:
        result = run(model, audio, image, out, steps=steps, sampler=sampler, guidance=guidance,
                     eta=eta, seed=seed, lip_scale=lip_scale, eye_scale=eye_scale, global_scale=global_scale,
                     eyes_from=eyes_from, pose_from=pose_from, crop_only=crop_only)
    except (GenerateError, MediaError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"disenttalk generate: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":  # Ray job entrypoint: python -m workflows.generate ...
    typer.run(cli)
