"""``disenttalk bench voices``: does the mouth follow what is said, whoever says it and however?

Probes a model with audio the demo corpus's truth does not cover and prints one JSON line per
probe (mouth opening of the model's motion on a portrait, decoded from the morphable model
without rendering, as a share of the face size):

- **non-speech**: silence, white and pink noise, breathing and music (``disenttalk.augment.music``) at speech level: the
  median opening should stay at the rest opening; ``talk_share`` is (median − rest) over the
  speech probe's (p95 − rest), the share of a talking mouth the non-speech opens it by;
- **pauses**: two sentences with a long pause between them: the median opening inside the pause;
- **loudness**: one sentence at 0 dB and −20 dB (and ``--gains``): the mean opening over the voiced
  frames relative to 0 dB;
- **pitch**: the sentence shifted an octave up and down (tempo kept): the same ratio;
- **voices**: the sentence in every installed voice (``disenttalk.synth.voices``): opening p50/p95
  and the best-lag correlation of the opening with the speech envelope;
- **recordings** (``--audio FILE``, repeatable): the same figures on any recording.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import typer

from disenttalk.constants import CHAMPION_URI, SAMPLE_RATE
from workflows.common import user_errors

SENTENCE = "Please call Stella and ask her to bring these things with her from the store."
SECOND = "Six spoons of fresh snow peas, and maybe a snack for her brother Bob."
PROBE_SECONDS = 6.0
LEVEL_DBFS = -22.0  # voiced RMS of every probe (noise and music too)


def _level(audio: np.ndarray, dbfs: float = LEVEL_DBFS) -> np.ndarray:
    from disenttalk.synth.clips import voiced_rms

    rms = voiced_rms(audio)
    return (audio * (10 ** (dbfs / 20) / rms if rms > 0 else 1.0)).astype(np.float32)


def non_speech(kind: str, seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Probe audio without speech: ``silence``, ``white``/``pink`` noise, ``breath`` (noise
    bursts shaped like breaths, 0.5 s in, 0.7 s out), ``music`` (a plucked melody over a chord)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    if kind == "silence":
        return np.zeros(n, np.float32)
    if kind == "white":
        return _level(rng.standard_normal(n))
    if kind == "pink":
        spectrum = np.fft.rfft(rng.standard_normal(n))
        spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / sample_rate), 20.0))
        return _level(np.fft.irfft(spectrum, n))
    if kind == "breath":
        from scipy.signal import butter, sosfilt

        noise = sosfilt(butter(4, [300, 2500], "bandpass", fs=sample_rate, output="sos"),
                        rng.standard_normal(n))
        phase = t % 2.0  # one breath every 2 s
        envelope = np.where(phase < 0.5, np.sin(np.pi * phase / 0.5),
                            np.where((phase > 0.8) & (phase < 1.5), np.sin(np.pi * (phase - 0.8) / 0.7), 0.0))
        return _level(noise * envelope**2)
    if kind == "music":
        from disenttalk.augment import music

        return _level(music(n, sample_rate, rng))
    raise ValueError(f"unknown probe {kind!r}")


class Probe:
    """The model and a portrait: audio → per-frame mouth opening of the model's motion."""

    def __init__(self, model: str, image: str | None, seed: int = 0) -> None:
        from disenttalk.face.portrait import prepare_portrait
        from disenttalk.generate.generator import Generator
        from disenttalk.synth.speakers import base_portrait
        from workflows.register import resolve_bundle

        self.generator = Generator.from_bundle(resolve_bundle(model))
        self.portrait = prepare_portrait(base_portrait(image))
        self.seed = seed
        # the motion's rest (lips closed, as the corpus's pauses): the portrait's own mouth
        # (the astronaut smiles with parted lips) is not what a resting motion shows
        self.rest = float(self._opening(self.generator.rest_expression()[None])[0])

    def _opening(self, expression: np.ndarray) -> np.ndarray:
        from disenttalk.face.measures import mouth_opening
        from disenttalk.generate.motion import Motion

        motion = Motion(np.asarray(expression, np.float32), np.zeros((len(expression), 6), np.float32),
                        float(self.generator.fps))
        return mouth_opening(self.generator.landmarks(motion, self.portrait.landmarks))

    def opening(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mouth opening [T] (inner-lip gap over face size) of the model's motion for ``audio``."""
        motion = self.generator.motion(audio, sample_rate, seed=self.seed)
        return self._opening(motion.expression)


def envelope(audio: np.ndarray, sample_rate: int, frames: int, fps: float) -> np.ndarray:
    """RMS in dB per video frame."""
    per = sample_rate / fps
    rms = [np.sqrt(np.mean(np.asarray(audio[int(k * per):int((k + 1) * per)], np.float64) ** 2) + 1e-12)
           for k in range(frames)]
    return 20 * np.log10(np.asarray(rms))


def follow(opening: np.ndarray, env: np.ndarray, max_lag: int = 5) -> float:
    """Best Pearson correlation of opening and envelope over lags of ±``max_lag`` frames."""
    best = -1.0
    n = min(len(opening), len(env))
    for lag in range(-max_lag, max_lag + 1):
        a = opening[max(lag, 0):n + min(lag, 0)]
        b = env[max(-lag, 0):n - max(lag, 0)]
        if len(a) > 10 and a.std() > 0 and b.std() > 0:
            best = max(best, float(np.corrcoef(a, b)[0, 1]))
    return best


def speech_figures(probe: Probe, audio: np.ndarray, sample_rate: int) -> dict:
    """Opening p50/p95, mean over voiced frames, in pauses, and how it follows the envelope."""
    from disenttalk.metrics.clip import pause_frames

    opening = probe.opening(audio, sample_rate)
    fps = float(probe.generator.fps)
    env = envelope(audio, sample_rate, len(opening), fps)
    voiced = env > env.max() - 30.0
    pauses = pause_frames(audio, sample_rate, len(opening), fps)
    return {"seconds": round(len(audio) / sample_rate, 2),
            "p50": float(np.median(opening)), "p95": float(np.percentile(opening, 95)),
            "voiced_mean": float(opening[voiced].mean()),
            "pause_median": float(np.median(opening[pauses])) if pauses.any() else math.nan,
            "pause_frames": int(pauses.sum()), "follow": follow(opening, env)}


def _round(row: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def _non_speech_rows(probe: Probe, seed: int, talk: float) -> Iterator[dict]:
    """Silence, noise, breathing and music: the median opening against the rest opening."""
    for kind in ("silence", "white", "pink", "breath", "music"):
        opening = probe.opening(non_speech(kind, PROBE_SECONDS, SAMPLE_RATE, seed), SAMPLE_RATE)
        median = float(np.median(opening))
        yield {"probe": "non_speech", "kind": kind, "median": median,
               "p95": float(np.percentile(opening, 95)), "rest": probe.rest,
               "over_rest": median - probe.rest, "talk_share": (median - probe.rest) / talk}


def _pause_row(probe: Probe, voice: Any) -> dict:
    """Two sentences 1.5 s apart: the figures, the pause's median opening among them."""
    from disenttalk.synth.voices import speak

    gap = np.zeros(int(1.5 * SAMPLE_RATE), np.float32)
    paused = _level(np.concatenate([speak(SENTENCE, voice).audio, gap, speak(SECOND, voice).audio]))
    return {"probe": "pause", "gap_s": 1.5, **speech_figures(probe, paused, SAMPLE_RATE),
            "rest": probe.rest}


def _loudness_rows(probe: Probe, sentence: np.ndarray, gains: str, reference: dict) -> Iterator[dict]:
    """The sentence at each gain (dB): the voiced opening relative to the sentence's own."""
    for gain in (float(g) for g in gains.split(",") if g.strip()):
        fig = speech_figures(probe, np.clip(sentence * 10 ** (gain / 20), -1, 1), SAMPLE_RATE)
        yield {"probe": "loudness", "gain_db": gain, **fig,
               "ratio": fig["voiced_mean"] / reference["voiced_mean"]}


def _pitch_rows(probe: Probe, sentence: np.ndarray, reference: dict) -> Iterator[dict]:
    """The sentence shifted up and down (tempo kept): the voiced opening relative to its own."""
    from disenttalk.augment import pitch_shift

    for semitones in (-12.0, -6.0, 6.0, 12.0):
        fig = speech_figures(probe, pitch_shift(sentence, SAMPLE_RATE, semitones), SAMPLE_RATE)
        yield {"probe": "pitch", "semitones": semitones, **fig,
               "ratio": fig["voiced_mean"] / reference["voiced_mean"]}


def _voice_rows(probe: Probe) -> Iterator[dict]:
    """The sentence in every installed English voice of the corpus, training and held out."""
    from disenttalk.synth.corpus import HELD_OUT_VOICES, TRAINING_VOICES
    from disenttalk.synth.voices import Voice, engine_available, parse_voice, speak

    known = {v for pool in (*TRAINING_VOICES.values(), HELD_OUT_VOICES) for v in pool
             if v.startswith(("espeak/en", "festival/", "flite/", "piper/"))}
    for key in sorted(known):
        voice: Voice = parse_voice(key, "en")
        if not engine_available(voice.engine):
            continue
        fig = speech_figures(probe, _level(speak(SENTENCE, voice).audio), SAMPLE_RATE)
        yield {"probe": "voice", "voice": key, "held_out": key in HELD_OUT_VOICES, **fig}


def _recording_rows(probe: Probe, audio: list[Path]) -> Iterator[dict]:
    from disenttalk.media import read_audio

    for path in audio:
        sound = read_audio(str(path), SAMPLE_RATE)
        yield {"probe": "recording", "file": str(path), **speech_figures(probe, sound, SAMPLE_RATE)}


@user_errors("bench voices")
def voices(
    model: str = typer.Option(CHAMPION_URI, help="Model URI or bundle folder."),
    image: str | None = typer.Option(None, help="Portrait (default: scikit-image's astronaut)."),
    audio: list[Path] = typer.Option([], "--audio", help="Recordings to probe as well (repeatable)."),
    gains: str = typer.Option("0,-20,-10,+6", help="Loudness probes, dB relative to the sentence."),
    seed: int = typer.Option(0, help="Sampling seed."),
    out: Path | None = typer.Option(None, help="Also write every row to this JSON file."),
) -> None:
    """Mouth opening on non-speech, pauses, loud and quiet, high and low, every installed voice."""
    from disenttalk.synth.voices import parse_voice, speak
    from workflows.platform.storage import local_path

    out = local_path(out, "--out") if out else None  # refused now, not after the probes
    audio = [local_path(a, "--audio") for a in audio]
    probe = Probe(model, image, seed)
    rows: list[dict] = []

    def emit(row: dict) -> None:
        rows.append(_round(row))
        print(json.dumps(rows[-1]), flush=True)

    base_voice = parse_voice("espeak/en-us", "en")
    sentence = _level(speak(SENTENCE, base_voice).audio)
    reference = speech_figures(probe, sentence, SAMPLE_RATE)
    talk = max(reference["p95"] - probe.rest, 1e-9)
    emit({"probe": "rest", "opening": probe.rest})
    emit({"probe": "speech", "voice": base_voice.key, **reference})
    for row in _non_speech_rows(probe, seed, talk):
        emit(row)
    emit(_pause_row(probe, base_voice))
    for rows_of in (_loudness_rows(probe, sentence, gains, reference),
                    _pitch_rows(probe, sentence, reference), _voice_rows(probe),
                    _recording_rows(probe, audio)):
        for row in rows_of:
            emit(row)
    if out is not None:
        out.write_text(json.dumps(rows, indent=2))
