"""Generate stage: a talking video of a photo speaking an audio file, from a registered model.

``disenttalk generate --model models:/disenttalk@champion --audio speech.wav --image face.jpg
--out talk.mp4``, or ``--text "..." --language en [--voice espeak/en-us+f2]`` instead of
``--audio`` to have the text spoken (:mod:`disenttalk.synth.catalogue`: en, zh, es; the voices
installed here). Every face in the photo is found (``disenttalk.face.portrait``); the largest
usable one, or the one ``--face N`` names, is cut out as a square 256×256 crop (the framing the
model was trained on, same margin as preprocessing) and animated; the answer gives its box and
lists every face found. By default the animated crop is pasted back into the full photo (soft
edges), ``--crop-only`` writes the crop itself. Eyes and head pose can be taken from a reference video.
Every file option takes a local path or an ``s3://`` URI (read through a temporary copy; an
``s3://`` output is written locally, then uploaded).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import typer

from disenttalk.constants import CHAMPION_URI, DEFAULT_STEPS, SAMPLE_RATE
from workflows.common import user_errors
from workflows.platform import storage


class GenerateError(RuntimeError):
    """A user-facing problem with the inputs (no face, unreadable file...)."""


def load_image(path: str | Path) -> np.ndarray:
    """RGB uint8 [H,W,3] from an image file; unreadable files raise :class:`GenerateError`."""
    from disenttalk import media

    try:
        return media.read_image(path)
    except media.MediaError as exc:
        raise GenerateError(str(exc)) from exc


def portrait_of(image: np.ndarray, face: int | None = None, framing: dict[str, Any] | None = None) -> Any:
    """:class:`~disenttalk.face.portrait.Portrait` of the chosen face (default: the largest usable one).

    The crop has the framing preprocessing gave the training clips: ``framing`` (``crop_size``,
    ``crop_margin``: what a bundle records as ``meta["framing"]``), else preprocessing's defaults;
    a photo with no usable face raises :class:`GenerateError` saying why.
    """
    from disenttalk.face.crop import framing as crop_framing
    from disenttalk.face.portrait import NoUsableFace, prepare_portrait

    size, margin = crop_framing(framing)
    try:
        return prepare_portrait(image, face, size=size, margin=margin)
    except NoUsableFace as exc:
        raise GenerateError(str(exc)) from exc


def track_video(video: str | Path, fps: float | None = None) -> tuple[Any, float]:
    """(Tracks, fps) of the face in a video, tracked at ``fps`` (the model's) a chunk of frames at a
    time, so a long reference does not have to fit in memory."""
    from disenttalk import media
    from disenttalk.face.tracker import FaceTracker, Tracks

    stream = media.FrameStream(video, fps=fps)
    parts = []
    with FaceTracker() as tracker:
        for start, frames in stream.chunks(250):
            parts.append(tracker.track(frames, resume=start > 0))
    return Tracks(landmarks=np.concatenate([p.landmarks for p in parts]),
                  valid=np.concatenate([p.valid for p in parts])), stream.fps


def reference_motion(video: str | Path, morphable: Any, fps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Expression [T,N] and pose [T,6] of a reference video (resampled to ``fps``, the model's),
    encoded with the bundle's model. Frames where the face is lost are filled in from their
    neighbours (linearly in time; the ends hold the nearest tracked frame), so the motion keeps
    the video's timing and does not jump where the face was missed."""
    tracks, _ = track_video(video, fps)
    if not tracks.valid.any():
        raise GenerateError(f"{video}: no face found in the reference video")
    expression, pose, _ = morphable.encode(tracks.landmarks[tracks.valid])
    return interpolate_missing(expression, tracks.valid), interpolate_missing(pose, tracks.valid)


def interpolate_missing(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows [V,D] of the valid frames → [T,D] for every frame (``valid`` [T] bool), the missing
    ones interpolated linearly between their tracked neighbours (held at the ends)."""
    valid = np.asarray(valid, dtype=bool)
    frames, seen = np.arange(len(valid)), np.flatnonzero(valid)
    values = np.asarray(values)
    out = np.stack([np.interp(frames, seen, values[:, d]) for d in range(values.shape[1])], axis=1)
    return out.astype(values.dtype)


def reference_blink_rate(video: str | Path, fps: float | None = None) -> float:
    """Blinks per second of the person in a reference video (tracked at ``fps``, the model's):
    what ``--blinks-like`` tells the model. At least 5 s of face are needed for a rate."""
    from disenttalk.generate.motion import MAX_BLINK_RATE
    from disenttalk.metrics.landmarks import landmark_blink_rate

    tracks, rate = track_video(video, fps)
    seen = float(tracks.valid.sum()) / rate
    if seen < 5.0:
        raise GenerateError(f"{video}: the face is seen for {seen:.1f} s; a blink rate needs at "
                            "least 5 s of the person's face")
    return min(landmark_blink_rate(tracks.landmarks, rate), MAX_BLINK_RATE)


def _pose_scale(pose_scale: str | float) -> Any:
    """``--pose-scale``: "fit" or a number."""
    if pose_scale == "fit":
        return pose_scale
    try:
        return float(pose_scale)
    except ValueError:
        raise GenerateError(f"--pose-scale must be 'fit' or a number, got {pose_scale!r}") from None


def _reference_motions(generator: Any, eyes_from: str | None, pose_from: str | None) -> tuple[Any, Any]:
    """(eyes, pose) controls: a reference video's expression / pose, else "generate" / "still"."""
    eyes: Any = "generate"
    pose: Any = "still"
    if not (eyes_from or pose_from):
        return eyes, pose
    morphable = generator.bundle.morphable
    if morphable is None:
        raise GenerateError("this model has no morphable model: --eyes-from/--pose-from need one")
    refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # one video given for both is tracked once
    for path in {eyes_from, pose_from} - {None}:
        refs[path] = reference_motion(path, morphable, generator.fps)
    if eyes_from:
        eyes = refs[eyes_from][0]
    if pose_from:
        pose = refs[pose_from][1]
    return eyes, pose


def _read_speech(audio: str) -> np.ndarray:
    from disenttalk import media

    try:
        return media.read_audio(audio)
    except media.MediaError as exc:
        raise GenerateError(str(exc)) from exc


def check_speech_source(audio: str | None, text: str | None, language: str = "en",
                        voice: str | None = None) -> None:
    """Exactly one of ``--audio`` and ``--text``, and a text that can be spoken (not empty, a
    known language, a voice installed here), else :class:`GenerateError`; nothing is read."""
    from disenttalk.synth import catalogue

    if audio is not None and text is not None:
        raise GenerateError("give --audio (a speech file) or --text (words to speak), not both")
    if audio is None and text is None:
        raise GenerateError("give --audio (a speech file) or --text (words to speak)")
    if text is not None and not text.strip():
        raise GenerateError("--text is empty: there is nothing to speak")
    if text is not None:
        try:
            catalogue.voice(language, voice)
        except ValueError as exc:  # UnknownLanguage, UnknownVoice
            raise GenerateError(str(exc)) from exc


def speak_text(text: str, language: str = "en", voice: str | None = None) -> tuple[np.ndarray, str]:
    """``text`` spoken in ``language`` (16 kHz float32) by ``voice`` (default: the language's), and
    the voice's key; an empty text, unknown language or voice not installed raises
    :class:`GenerateError`."""
    from disenttalk.synth import catalogue

    try:
        return catalogue.say(text, language, voice), catalogue.voice(language, voice).key
    except ValueError as exc:  # EmptyText, UnknownLanguage, UnknownVoice
        raise GenerateError(str(exc)) from exc


def _frame_chunks(generator: Any, motion: Any, portrait: Any, photo: np.ndarray,
                  crop_only: bool) -> Iterator[np.ndarray]:
    """The rendered video a chunk at a time (the renderer's batch, so the frames are those
    ``Generator.render`` draws at once): the animated crop, or the photo with the animated face
    pasted in. Memory holds a chunk, not the video."""
    if generator.bundle.morphable is None:
        raise ValueError("this bundle has no morphable model, so it cannot render video")
    # drawn on the photo's own pixels (up to 512 px a side), so its detail stays
    sharp = None if crop_only else portrait.sharp_crop(photo)
    marks = np.asarray(portrait.landmarks, dtype=np.float32)
    landmarks = generator.landmarks(motion, marks)
    renderer, scale = generator.renderer(portrait.crop, marks, sharp)
    size = renderer.config.chunk_frames
    for start in range(0, len(landmarks), size):
        drawn = renderer.render(landmarks[start:start + size] * scale)
        # only what moved is pasted: the rest of the photo keeps its own pixels
        yield drawn if crop_only else portrait.paste(photo, drawn, still=portrait.crop if sharp is None else sharp)


def _write_video(out: str, chunks: Iterator[np.ndarray], fps: float, speech: np.ndarray) -> tuple[int, list[int]]:
    """Each chunk encoded as it is made; the frame count and [H, W]."""
    from disenttalk import media

    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with media.VideoWriter(out, fps, speech, SAMPLE_RATE) as writer:
        for frames in chunks:
            writer.write(frames)
    return writer.frames, list(writer.size or (0, 0))


def _answer(out: str, frames: int, size: list[int], speech: np.ndarray, crop_only: bool,
            blink_rate: float | None, portrait: Any, start: float) -> dict[str, Any]:
    return {
        "video": str(out),
        "frames": int(frames),
        "seconds_of_audio": round(len(speech) / SAMPLE_RATE, 3),
        "size": size,
        "output": "crop" if crop_only else "pasted into the photo",
        **({"blink_rate": round(blink_rate, 3)} if blink_rate is not None else {}),
        **portrait.to_dict(),  # face (index), box [x, y, w, h] and every face found
        "elapsed_s": round(time.perf_counter() - start, 2),
    }


def run(
    model: str,
    audio: str | None,
    image: str,
    out: str,
    *,
    text: str | None = None,
    language: str = "en",
    voice: str | None = None,
    steps: int | None = None,
    sampler: str = "ddim",
    guidance: float | None = None,
    eta: float | None = None,
    seed: int = 0,
    lip_scale: float = 1.0,
    eye_scale: float = 1.0,
    global_scale: float = 1.0,
    eyes_from: str | None = None,
    pose_from: str | None = None,
    pose_centre: str = "mean",
    pose_scale: str | float = "fit",
    pose_limits: bool = True,
    crop_only: bool = False,
    face: int | None = None,
    blinks: bool | None = None,
    blink_rate: float | None = None,
    blinks_like: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Write ``out`` (mp4 with the speech: ``audio``, or ``text`` spoken); returns a summary dict."""
    from disenttalk.generate import Controls, Generator
    from disenttalk.generate.retarget import PoseLimits
    from workflows.register import resolve_bundle

    start = time.perf_counter()
    check_speech_source(audio, text, language, voice)
    if blinks_like and blink_rate is not None:
        raise GenerateError("give --blink-rate or --blinks-like, not both")
    scale = _pose_scale(pose_scale)
    generator = Generator.from_bundle(resolve_bundle(model), device=device,
                                      pose_limits=PoseLimits(enabled=pose_limits))
    if blinks_like:
        blink_rate = reference_blink_rate(blinks_like, generator.fps)
    eyes, pose = _reference_motions(generator, eyes_from, pose_from)
    controls = Controls(lip_scale=lip_scale, eye_scale=eye_scale, global_scale=global_scale,
                        eyes=eyes, pose=pose, blinks=blinks, blink_rate=blink_rate,
                        pose_centre=pose_centre, pose_scale=scale)
    spoken = {}  # the voice, when text is spoken
    if audio is not None:
        speech = _read_speech(audio)
    else:
        speech, spoken["voice"] = speak_text(text or "", language, voice)
    photo = load_image(image)
    portrait = portrait_of(photo, face, generator.bundle.meta.get("framing"))
    motion = generator.motion(speech, SAMPLE_RATE, steps=steps, sampler=sampler, guidance=guidance,
                              eta=eta, seed=seed, controls=controls)
    chunks = _frame_chunks(generator, motion, portrait, photo, crop_only)
    frames, size = _write_video(out, chunks, motion.fps, speech)
    return {**_answer(out, frames, size, speech, crop_only, blink_rate, portrait, start), **spoken}


@contextmanager
def local_files(inputs: dict[str, str | None], out: str) -> Iterator[tuple[dict[str, str | None], str]]:
    """Local paths for the inputs (``s3://`` ones copied to temporary files) and for the output
    (for ``s3://``, a temporary file uploaded once the video is complete, so a failed run
    leaves nothing at ``out``). Other URI schemes are refused with a message."""
    with ExitStack() as stack:
        local: dict[str, str | None] = {}
        for option, value in inputs.items():
            if value is None or not storage.is_s3(value):
                local[option] = None if value is None else str(storage.local_path(value, f"--{option}"))
            else:
                local[option] = str(stack.enter_context(storage.local_copy(value)))
        if not storage.is_s3(out):
            yield local, str(storage.local_path(out, "--out"))
            return
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="disenttalk-generate-"))
        staged = str(Path(folder) / (Path(out).name or "out.mp4"))
        yield local, staged
        storage.upload_file(staged, out)


@user_errors("generate")
def cli(
    model: str = typer.Option(CHAMPION_URI, help=f"{CHAMPION_URI} (the default), models:/NAME/VERSION, a bundle dir or s3:// URI."),
    audio: str | None = typer.Option(None, help=f"Speech: any audio or video file (resampled to {SAMPLE_RATE // 1000} kHz mono). Or --text."),
    text: str | None = typer.Option(None, help="Words to speak instead of --audio (synthesised speech, in --language)."),
    language: str = typer.Option("en", help="Language of --text: en, zh (Mandarin, in characters) or es."),
    voice: str | None = typer.Option(None, help="Voice for --text, e.g. espeak/en-us+f2 (default: the language's espeak-ng voice)."),
    image: str = typer.Option(..., help="Photo with a face (the largest is animated unless --face says)."),
    out: str = typer.Option(..., help="Output mp4."),
    steps: int | None = typer.Option(None, help=f"Sampler steps (default: DDIM {DEFAULT_STEPS}, quadratically spaced; DDPM all T)."),
    sampler: str = typer.Option("ddim", help="ddim | ddpm."),
    guidance: float | None = typer.Option(None, help="Classifier-free guidance scale s (Eq. 9); default from the model."),
    eta: float | None = typer.Option(None, help="DDIM eta (0 deterministic ... 1 stochastic); default from the model."),
    seed: int = typer.Option(0, help="Noise seed (same seed, same video)."),
    lip_scale: float = typer.Option(1.0, help="Lip motion intensity."),
    eye_scale: float = typer.Option(1.0, help="Eye motion intensity."),
    global_scale: float = typer.Option(1.0, help="Global expression intensity."),
    eyes_from: str | None = typer.Option(None, help="Reference video whose eye motion is kept."),
    blinks: bool | None = typer.Option(None, "--blinks/--no-blinks",
                                       help="Add the training corpus's blinks to the generated eyes "
                                            "(default: when the model has them)."),
    blink_rate: float | None = typer.Option(None, help="Blinks per second, 0 to 1.5 (default: the "
                                            "training corpus's own rate)."),
    blinks_like: str | None = typer.Option(None, help="A video of the person (≥ 5 s of face): "
                                           "blink at the rate measured in it."),
    pose_from: str | None = typer.Option(None, help="Reference video whose head motion is applied "
                                         "(within what the warp renderer draws plausibly, see --pose-scale)."),
    pose_centre: str = typer.Option("mean", help="The reference's head motion is its change from its "
                                    "mean pose (mean) or from its first frame (first)."),
    pose_scale: str = typer.Option("fit", help="Multiplies the reference's head motion: a number, or "
                                   "fit = per axis, scaled so that 98 % of it is within the limits."),
    pose_limits: bool = typer.Option(True, "--pose-limits/--no-pose-limits",
                                     help="Bend head motion softly into the range the warp renderer "
                                          "draws without folding the face (yaw ±3°, pitch ±3°, roll ±12°)."),
    crop_only: bool = typer.Option(False, help="Write the 256x256 face crop instead of pasting it back."),
    device: str = typer.Option("auto", help="auto (CUDA when a GPU is visible) | cpu | cuda | cuda:N."),
    face: int | None = typer.Option(None, help="Which face to animate, counted from 0 left to right "
                                    "(the answer lists them); default: the largest."),
) -> None:
    """Make a talking video of IMAGE speaking AUDIO (or TEXT)."""
    from disenttalk.media import MediaError

    inputs = {"audio": audio, "image": image, "eyes-from": eyes_from, "pose-from": pose_from,
              "blinks-like": blinks_like}
    try:
        check_speech_source(audio, text, language, voice)  # before any file is fetched
        with local_files(inputs, out) as (files, written):
            result = run(model, files["audio"], files["image"], written, text=text, language=language,
                         voice=voice, steps=steps, sampler=sampler,
                         guidance=guidance, eta=eta, seed=seed, lip_scale=lip_scale, eye_scale=eye_scale,
                         global_scale=global_scale, eyes_from=files["eyes-from"],
                         pose_from=files["pose-from"], pose_centre=pose_centre, pose_scale=pose_scale,
                         pose_limits=pose_limits, crop_only=crop_only, face=face, blinks=blinks,
                         blink_rate=blink_rate, blinks_like=files["blinks-like"], device=device)
        result["video"] = out
    except (GenerateError, MediaError, FileNotFoundError, ValueError) as exc:
        typer.echo(f"disenttalk generate: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(result, indent=2))


if __name__ == "__main__":  # Ray job entrypoint: python -m workflows.generate ...
    typer.run(cli)
