"""Rendering the demo corpus: speech + truth motion → mp4 and npz per clip, in parallel.

A clip is padded with 0.3–0.6 s of silence at each end (a still, closed mouth), its audio cut to
a whole number of 25 fps frames, its truth animated from the speaker portrait's tracked
landmarks and rendered by ``WarpRenderer``. Speaker portraits are prepared once in the parent;
each worker process keeps one renderer per speaker.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from disenttalk.synth.animate import FPS, Truth, animate
from disenttalk.synth.corpus import (
    ClipPlan,
    manifest_row,
    phoneme_table,
    plan_corpus,
    save_npz,
    summarize,
    write_manifest,
)
from disenttalk.synth.speakers import Speaker, base_portrait, speaker_portrait
from disenttalk.synth.speech import SAMPLE_RATE, Speech, synthesize

PAD_S = (0.3, 0.6)  # silence before / after the speech, drawn per clip


@dataclass
class Identity:
    """A speaker with their 256² portrait and its tracked landmarks [478,3]."""

    speaker: Speaker
    portrait: np.ndarray
    landmarks: np.ndarray


def prepare_identities(speakers: Sequence[Speaker], portrait_path: str | None = None) -> dict[str, Identity]:
    """Each speaker's portrait from the base photo, tracked; raises if a face is not found."""
    from disenttalk.face.tracker import FaceTracker

    image = base_portrait(portrait_path)
    with FaceTracker() as tracker:
        face = tracker.track_image(image)
        if face is None:  # small faces (a group photo): the full-range detector, largest face
            from disenttalk.face.detect import NoUsableFace, choose_face, find_faces

            faces = find_faces(image)
            try:
                face = faces[choose_face(faces)].landmarks
            except NoUsableFace as exc:
                raise ValueError(f"portrait {portrait_path or '(astronaut)'}: {exc}") from exc
        out = {}
        for spk in speakers:
            portrait = speaker_portrait(image, face, spk)
            lm = tracker.track_image(portrait)
            if lm is None:
                raise ValueError(f"no face found in the portrait of {spk.speaker_id}")
            out[spk.speaker_id] = Identity(spk, portrait, lm)
    return out


def clip_speech(plan: ClipPlan, speaker: Speaker, rng: np.random.Generator) -> tuple[Speech, int]:
    """The clip's padded speech (16 kHz) and its number of video frames."""
    spoken = synthesize(plan.text, plan.language, speaker.rate_wpm, speaker.pitch, speaker.pitch_range)
    lead, trail = rng.uniform(*PAD_S, size=2)
    per_frame = SAMPLE_RATE / FPS
    num_frames = math.ceil((lead + spoken.duration_s + trail) * FPS)
    audio = np.zeros(int(round(num_frames * per_frame)), np.float32)
    start = int(round(lead * SAMPLE_RATE))
    audio[start:start + len(spoken.audio)] = np.clip(spoken.audio, -1.0, 1.0)
    offset = start / SAMPLE_RATE
    phonemes = tuple((a + offset, b + offset, p) for a, b, p in spoken.phonemes)
    words = tuple(w + offset for w in spoken.words)
    return Speech(audio=audio, phonemes=phonemes, words=words), num_frames


def clip_truth(plan: ClipPlan, identity: Identity) -> tuple[Speech, Truth]:
    """Speech and truth motion of a planned clip (deterministic in the plan's seed)."""
    rng = np.random.default_rng(np.random.SeedSequence(list(plan.seed)))
    speech, num_frames = clip_speech(plan, identity.speaker, rng)
    return speech, animate(speech, identity.speaker, identity.landmarks, num_frames, rng)


def write_truth(path: Path, speech: Speech, truth: Truth) -> None:
    """The clip's truth npz (see ``disenttalk.synth.corpus`` for the keys)."""
    save_npz(
        path, landmarks=truth.landmarks, mouth_opening=truth.mouth_opening, blinks=truth.blinks,
        phonemes=phoneme_table(speech.phonemes), mouth=truth.mouth, eye_closure=truth.eye_closure,
        head=truth.head, fps=np.float64(truth.fps),
    )


_IDENTITIES: dict[str, Identity] = {}
_RENDERERS: dict = {}


def _init_worker(identities: dict[str, Identity], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _IDENTITIES.clear()
    _IDENTITIES.update(identities)
    _RENDERERS.clear()


def render_clip(plan: ClipPlan, root: str) -> dict:
    """Synthesise, animate, render and write one clip; returns its manifest row."""
    from disenttalk.media import write_video
    from disenttalk.render import WarpRenderer

    identity = _IDENTITIES[plan.speaker_id]
    speech, truth = clip_truth(plan, identity)
    if plan.speaker_id not in _RENDERERS:
        _RENDERERS[plan.speaker_id] = WarpRenderer(identity.portrait, identity.landmarks)
    frames = _RENDERERS[plan.speaker_id].render(truth.landmarks)  # [T,256,256,3]
    clips = Path(root) / "clips"
    write_video(clips / f"{plan.clip_id}.mp4", frames, FPS, speech.audio)
    write_truth(clips / f"{plan.clip_id}.npz", speech, truth)
    return manifest_row(plan, len(speech.audio) / SAMPLE_RATE, len(frames), FPS)


def build_corpus(
    out: str | Path,
    languages: Sequence[str] = ("en", "zh"),
    clips_per_language: int = 20,
    seed: int = 0,
    portrait: str | None = None,
    xling_language: str | None = "es",
    workers: int = 2,
    progress: bool = True,
    **plan_options,
) -> dict:
    """Write the whole corpus to ``out``; returns the summary (clips, hours, per split/language)."""
    from skimage.io import imsave
    from tqdm import tqdm

    started = time.perf_counter()
    root = Path(out)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    (root / "speakers").mkdir(exist_ok=True)
    speakers, plans = plan_corpus(languages, clips_per_language, seed, xling_language, **plan_options)
    identities = prepare_identities(speakers, portrait)
    for ident in identities.values():
        imsave(root / "speakers" / f"{ident.speaker.speaker_id}.png", ident.portrait, check_contrast=False)
    (root / "speakers.json").write_text(json.dumps([s.to_dict() for s in speakers], indent=2))
    settings = {"languages": list(languages), "clips_per_language": clips_per_language, "seed": seed,
                "portrait": portrait, "xling_language": xling_language, **plan_options}
    (root / "corpus.json").write_text(json.dumps(settings, indent=2))

    rows: list[dict] = []
    bar = tqdm(total=len(plans), desc="demo clips", unit="clip", disable=not progress)
    if workers <= 1:
        _init_worker(identities, threads=1)
        for plan in plans:
            rows.append(render_clip(plan, str(root)))
            bar.update()
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(identities, 1)) as pool:
            futures = [pool.submit(render_clip, plan, str(root)) for plan in plans]
            for fut in as_completed(futures):
                rows.append(fut.result())
                bar.update()
    bar.close()
    write_manifest(root, rows)
    summary = summarize(rows)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary
