"""Rendering the demo corpus: speech + truth motion → mp4 and npz per clip, in parallel.

A clip's sentences are spoken one by one by its voice and joined by pauses of 0.1–1.2 s (the
mouth closes and rests in the longer ones), padded with 0.3–0.6 s of silence at each end (a
still, closed mouth), brought to a speech level drawn per clip, its audio cut to a whole number
of 25 fps frames, its truth animated from the speaker portrait's tracked
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
    voice_notes,
    write_manifest,
)
from disenttalk.synth.speakers import Speaker, base_portrait, speaker_portrait
from disenttalk.synth.speech import SAMPLE_RATE, Speech
from disenttalk.synth.voices import Prosody, parse_voice, speak

PAD_S = (0.3, 0.6)  # silence before / after the speech, drawn per clip
PAUSE_S = (0.1, 1.2)  # silence between two sentences, drawn per pause
LEVEL_DBFS = (-28.0, -16.0)  # RMS of the voiced audio, drawn per clip
ESPEAK_DEFAULT_WPM = 175  # a speaker's rate_wpm over this is the rate factor of any engine


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


def speaker_prosody(speaker: Speaker) -> Prosody:
    """The speaker's rate and pitch as any engine's prosody."""
    return Prosody(rate=speaker.rate_wpm / ESPEAK_DEFAULT_WPM, pitch=speaker.pitch,
                   pitch_range=speaker.pitch_range)


def voiced_rms(audio: np.ndarray) -> float:
    """RMS over the 20 ms frames within 40 dB of the loudest one (the speech, not the pauses)."""
    hop = SAMPLE_RATE // 50
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    power = (frames.astype(np.float64) ** 2).mean(1)
    if not len(power) or power.max() <= 0:
        return 0.0
    return float(np.sqrt(power[power >= power.max() * 1e-4].mean()))


def clip_speech(plan: ClipPlan, speaker: Speaker, rng: np.random.Generator) -> tuple[Speech, int]:
    """The clip's padded speech (16 kHz) and its number of video frames."""
    voice = parse_voice(plan.voice or f"espeak/{plan.language}", plan.language)
    prosody = speaker_prosody(speaker)
    lead, trail = rng.uniform(*PAD_S, size=2)
    pauses = rng.uniform(*PAUSE_S, size=max(len(plan.sentences) - 1, 0))
    level = 10.0 ** (rng.uniform(*LEVEL_DBFS) / 20.0)
    noise_seed = int(rng.integers(2**31))
    pieces, phonemes, words, at = [], [], [], lead
    for k, sentence in enumerate(plan.sentences):
        spoken = speak(sentence, voice, prosody, seed=noise_seed + k)
        start = int(round(at * SAMPLE_RATE))
        pieces.append((start, spoken.audio))
        phonemes += [(a + start / SAMPLE_RATE, b + start / SAMPLE_RATE, p) for a, b, p in spoken.phonemes]
        words += [w + start / SAMPLE_RATE for w in spoken.words]
        at = start / SAMPLE_RATE + spoken.duration_s + (pauses[k] if k < len(pauses) else 0.0)
    per_frame = SAMPLE_RATE / FPS
    num_frames = math.ceil((at + trail) * FPS)
    audio = np.zeros(int(round(num_frames * per_frame)), np.float32)
    for start, piece in pieces:
        audio[start:start + len(piece)] = piece[: len(audio) - start]
    rms = voiced_rms(audio)
    if rms > 0:
        audio *= min(level / rms, 0.99 / max(float(np.abs(audio).max()), 1e-9))
    return Speech(audio=np.clip(audio, -1.0, 1.0), phonemes=tuple(phonemes), words=tuple(words)), num_frames


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
    notes = voice_notes(plan_options.get("engines"))
    for note in notes:
        print(f"demo-data: {note}")
    identities = prepare_identities(speakers, portrait)
    for ident in identities.values():
        imsave(root / "speakers" / f"{ident.speaker.speaker_id}.png", ident.portrait, check_contrast=False)
    (root / "speakers.json").write_text(json.dumps([s.to_dict() for s in speakers], indent=2))
    settings = {"languages": list(languages), "clips_per_language": clips_per_language, "seed": seed,
                "portrait": portrait, "xling_language": xling_language, **plan_options,
                "voices": {split: sorted({p.voice for p in plans if p.split == split})
                           for split in sorted({p.split for p in plans})}}
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
    summary["voice_notes"] = notes
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary
