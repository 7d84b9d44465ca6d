"""The demo corpus: plan clips, split them without leakage, render video + truth, write a manifest.

Splits. Speakers (shared by all languages) are shuffled with the seed and partitioned into
train / val / test speakers (60 / 15 / 25 %, at least one each); each language's sentence list is
shuffled and partitioned into train / val / test sentences (60 / 20 / 20 %). A language's clips
are divided 60 / 20 / 20 % among the splits, and a clip of split s is spoken by an s-speaker
reading s-sentences only, so no test (or val) speaker or sentence ever appears in train.
``test_xling`` holds clips in a further language that no other split uses (Spanish by default),
spoken by the test speakers: unseen language, unseen faces and voices.

Voices. A clip is spoken by one synthetic voice (``disenttalk.synth.voices``): train, val and test
clips by the language's training voices (espeak-ng variants; for English also festival's
diphone voices), taken in turn. ``test_voice`` holds English clips of the test speakers and test
sentences spoken only by held-out voices: whole engines no other clip uses (flite, the neural
Piper voice) and festival's HTS voice, so it measures lips on voices the model never heard.
Engines that are not installed are left out with a message (``voice_notes``); with espeak-ng
alone, ``test_voice`` falls back to espeak-ng variants no other clip uses.

Layout of the output folder::

    manifest.jsonl        one JSON line per clip: clip_id, path, truth, language, speaker,
                          portrait (the speaker's photo), sentence, duration_s, split, fps,
                          num_frames, engine and voice (``engine/name``)
    clips/<clip_id>.mp4   256×256, 25 fps, H.264 + AAC 16 kHz mono
    clips/<clip_id>.npz   truth: landmarks [T,478,3], mouth_opening [T], blinks [K,2] (s),
                          phonemes (start, end, symbol), mouth [T,3], eye_closure [T], head [T,4]
    speakers/<id>.png     each speaker's portrait; speakers.json their parameters
    corpus.json           the settings the corpus was made with

Every random draw comes from ``np.random.SeedSequence([seed, ...])``, so one seed gives the
same plan, audio and truth files byte for byte, whatever the number of worker processes.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from disenttalk.synth.sentences import sentences as sentence_list
from disenttalk.synth.speakers import Speaker, make_speakers

SPLITS = ("train", "val", "test")
XLING_SPLIT = "test_xling"
VOICE_SPLIT = "test_voice"
VOICE_LANGUAGE = "en"  # test_voice speaks the test split's English sentences
SPEAKER_FRACTIONS = (0.60, 0.15, 0.25)
SENTENCE_FRACTIONS = (0.60, 0.20, 0.20)
CLIP_FRACTIONS = (0.60, 0.20, 0.20)


@dataclass(frozen=True)
class ClipPlan:
    """What one clip will be: who says which sentences in which language, for which split."""

    clip_id: str
    language: str
    speaker_id: str
    sentences: tuple[str, ...]
    split: str
    seed: tuple[int, ...]  # SeedSequence entropy of the clip's own draws
    voice: str = ""  # ``engine/name`` of the voice that speaks it ("": espeak-ng's default)

    @property
    def text(self) -> str:
        """The spoken text (sentences joined)."""
        sep = "" if self.language == "zh" else " "
        return sep.join(self.sentences)


def partition(count: int, fractions: Sequence[float]) -> list[int]:
    """Split ``count`` items into len(fractions) parts, every later part ≥ 1 when count allows."""
    sizes = [0] * len(fractions)
    for k in range(1, len(fractions)):  # val, test first: they must not be empty
        sizes[k] = max(1, round(fractions[k] * count)) if count > k else 0
    sizes[0] = count - sum(sizes[1:])
    if sizes[0] < 1 <= count:  # too few items: train keeps one, the smallest parts give way
        for k in range(len(sizes) - 1, 0, -1):
            if sizes[0] >= 1:
                break
            if sizes[k] > 0:
                sizes[k] -= 1
                sizes[0] += 1
    return sizes


def _split_items(items: Sequence, fractions: Sequence[float], rng: np.random.Generator) -> dict:
    order = [items[i] for i in rng.permutation(len(items))]
    sizes = partition(len(items), fractions)
    bounds = np.cumsum([0, *sizes])
    return {s: order[bounds[k]:bounds[k + 1]] for k, s in enumerate(SPLITS)}


def plan_corpus(
    languages: Sequence[str],
    clips_per_language: int,
    seed: int,
    xling_language: str | None = "es",
    num_speakers: int = 8,
    sentences_per_clip: int = 2,
    xling_clips: int | None = None,
    sentence_bank: str = "default",
    voice_clips: int = 0,
    engines: Sequence[str] | None = None,
    training_engines: Sequence[str] | None = None,
) -> tuple[list[Speaker], list[ClipPlan]]:
    """Speakers and clip plans with leakage-free train/val/test (+ test_xling) splits.

    ``sentence_bank``: ``default`` (each language's first list) or ``large`` (its second list
    too, see ``disenttalk.synth.sentences``); the cross-lingual split reads the same bank.
    ``voice_clips``: clips of ``test_voice`` (0: none); ``engines``: the speech engines to use
    (default: those installed, see :func:`voice_pools`); ``training_engines``: only these speak
    the train, val and test clips (an ablation: ``("espeak",)``; test_voice keeps its voices)."""
    if xling_language and xling_language in languages:
        raise ValueError(f"cross-lingual language {xling_language!r} is also a training language")
    if num_speakers < 3:
        raise ValueError("need at least 3 speakers (one per split)")
    speakers = make_speakers(num_speakers, seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17]))
    spk_split = _split_items([s.speaker_id for s in speakers], SPEAKER_FRACTIONS, rng)
    trained, held_out = voice_pools(engines)
    if training_engines is not None:
        trained = _only_engines(trained, training_engines)
    plans: list[ClipPlan] = []

    def add(language: str, split: str, count: int, pool: list[str], people: list[str],
            voices: Sequence[str]) -> None:
        _add_clips(plans, language, split, count, pool, people, voices, sentences_per_clip, seed)

    test_sentences: dict[str, list[str]] = {}
    for language in languages:
        sent_split = _split_items(list(sentence_list(language, sentence_bank)), SENTENCE_FRACTIONS, rng)
        test_sentences[language] = sent_split["test"]
        voices = trained.get(language) or (f"espeak/{language}",)
        for split, count in zip(SPLITS, partition(clips_per_language, CLIP_FRACTIONS), strict=True):
            # each split starts its turn of voices elsewhere, so small splits still hear them all
            turn = (SPLITS.index(split) * 3) % len(voices)
            add(language, split, count, sent_split[split], spk_split[split], voices[turn:] + voices[:turn])
    if xling_language:
        count = max(1, clips_per_language // 2) if xling_clips is None else xling_clips
        bank = sentence_list(xling_language, sentence_bank)
        pool = [bank[i] for i in rng.permutation(len(bank))]
        add(xling_language, XLING_SPLIT, count, pool, spk_split["test"],
            trained.get(xling_language) or (f"espeak/{xling_language}",))
    if voice_clips:
        if VOICE_LANGUAGE not in test_sentences:
            raise ValueError(f"test_voice speaks {VOICE_LANGUAGE!r} test sentences: add it to the languages")
        add(VOICE_LANGUAGE, VOICE_SPLIT, voice_clips, test_sentences[VOICE_LANGUAGE], spk_split["test"],
            held_out)
    return speakers, plans


def _only_engines(pools: dict[str, tuple[str, ...]], engines: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each language's voices of ``pools`` that ``engines`` speak."""
    return {lang: tuple(v for v in pool if _engine(v) in engines) for lang, pool in pools.items()}


def _add_clips(plans: list[ClipPlan], language: str, split: str, count: int, pool: Sequence[str],
               people: Sequence[str], voices: Sequence[str], sentences_per_clip: int, seed: int) -> None:
    """Append ``count`` clips of ``split`` to ``plans``: sentences from ``pool`` in turn,
    ``sentences_per_clip`` each, speakers and voices in turn; a clip's seed holds its index."""
    for k in range(count):
        chosen = tuple(pool[(k * sentences_per_clip + j) % len(pool)] for j in range(sentences_per_clip))
        plans.append(ClipPlan(
            clip_id=f"{language}_{split}_{k:03d}", language=language,
            speaker_id=people[k % len(people)], sentences=chosen, split=split,
            seed=(seed, 0xC11B, len(plans)), voice=voices[k % len(voices)],
        ))


# Voices (``engine/name``, see disenttalk.synth.voices) per language for train/val/test clips.
TRAINING_VOICES: dict[str, tuple[str, ...]] = {
    "en": ("espeak/en-us", "festival/kal_diphone", "espeak/en-us+f2", "espeak/en-us+m3",
           "festival/ked_diphone", "espeak/en-us+f4", "espeak/en-us+klatt", "espeak/en-us+m7"),
    "zh": ("espeak/cmn", "espeak/cmn+f2", "espeak/cmn+m3", "espeak/cmn+f4"),
    "es": ("espeak/es", "espeak/es+f2", "espeak/es+m3", "espeak/es+f4"),
}
# test_voice: whole engines no other clip uses (flite, Piper's neural voice) and a held-out
# voice of a training engine (festival's HTS voice). flite's kal is festival's kal speaker, so
# it is left out of both.
HELD_OUT_VOICES = ("flite/rms", "piper/en_US-joe-medium", "flite/slt", "festival/cmu_us_slt_arctic_hts",
                   "flite/awb")
# With espeak-ng alone: variants no training clip uses.
FALLBACK_HELD_OUT = ("espeak/en-us+m6", "espeak/en-us+f5", "espeak/en-us+klatt4")


def _engine(key: str) -> str:
    return key.split("/", 1)[0]


def _all_voices() -> list[tuple[str, str]]:
    """(language, key) of every voice the corpus may use."""
    return [(lang, v) for lang, pool in TRAINING_VOICES.items() for v in pool] + [
        (VOICE_LANGUAGE, v) for v in HELD_OUT_VOICES]


def _usable(engines: Sequence[str] | None) -> set[str]:
    """Keys of the voices the corpus can use: of ``engines`` if given, else the installed ones."""
    from disenttalk.synth.voices import ENGINES, missing, parse_voice

    if engines is not None:
        unknown = sorted(set(engines) - set(ENGINES))
        if unknown:
            raise ValueError(f"unknown speech engine(s) {', '.join(unknown)}; known: {', '.join(ENGINES)}")
        return {v for _, v in _all_voices() if _engine(v) in engines}
    return {v for lang, v in _all_voices() if not missing([parse_voice(v, lang)])}


def voice_pools(engines: Sequence[str] | None = None) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """(training voices per language, held-out voices) among ``engines`` (default: installed)."""
    usable = _usable(engines)
    trained = {lang: tuple(v for v in pool if v in usable) for lang, pool in TRAINING_VOICES.items()}
    held_out = tuple(v for v in HELD_OUT_VOICES if v in usable)
    return trained, held_out or FALLBACK_HELD_OUT


def voice_notes(engines: Sequence[str] | None = None) -> list[str]:
    """What the corpus leaves out because an engine or voice is missing (empty when nothing is)."""
    from disenttalk.synth.voices import missing, parse_voice

    usable = _usable(engines)
    left_out = [(lang, v) for lang, v in _all_voices() if v not in usable]
    if not left_out:
        return []
    notes = [f"voices left out (not installed): {', '.join(sorted({v for _, v in left_out}))}"]
    if engines is None:
        notes += missing(parse_voice(v, lang) for lang, v in left_out)
    else:
        notes.append(f"engines in use: {', '.join(engines)}")
    if voice_pools(engines)[1] == FALLBACK_HELD_OUT:
        notes.append("test_voice falls back to espeak-ng variants no training clip uses "
                     "(no held-out engine installed; `make voices` installs festival and flite)")
    return notes


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` with fixed zip timestamps (byte-identical for equal arrays), atomic."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)


def phoneme_table(phonemes: Sequence[tuple[float, float, str]]) -> np.ndarray:
    """Phonemes as a structured array with fields start, end (s) and symbol (IPA)."""
    dtype = [("start", "<f8"), ("end", "<f8"), ("symbol", "<U8")]
    return np.array([tuple(p) for p in phonemes], dtype=dtype)


def manifest_row(plan: ClipPlan, duration_s: float, num_frames: int, fps: float) -> dict:
    """The manifest line of a rendered clip (paths relative to the corpus folder)."""
    return {
        "clip_id": plan.clip_id,
        "path": f"clips/{plan.clip_id}.mp4",
        "truth": f"clips/{plan.clip_id}.npz",
        "language": plan.language,
        "speaker": plan.speaker_id,
        "portrait": f"speakers/{plan.speaker_id}.png",
        "sentence": plan.text,
        "duration_s": round(duration_s, 4),
        "split": plan.split,
        "fps": fps,
        "num_frames": num_frames,
        "engine": _engine(plan.voice) if plan.voice else "espeak",
        "voice": plan.voice or "espeak/default",
    }


def read_corpus_manifest(root: str | Path) -> list[dict]:
    """The rows of ``root/manifest.jsonl``."""
    with open(Path(root) / "manifest.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_manifest(root: str | Path, rows: Sequence[dict]) -> None:
    """Write ``root/manifest.jsonl`` sorted by clip id (atomic)."""
    path = Path(root) / "manifest.jsonl"
    tmp = path.with_name(".manifest.jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in sorted(rows, key=lambda r: r["clip_id"]):
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
    os.replace(tmp, path)


def summarize(rows: Sequence[dict]) -> dict:
    """Clip counts and hours, overall and per split × language."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for r in rows:
        cell = table.setdefault(r["split"], {}).setdefault(r["language"], {"clips": 0, "hours": 0.0})
        cell["clips"] += 1
        cell["hours"] += r["duration_s"] / 3600.0
    return {
        "clips": len(rows),
        "hours": sum(r["duration_s"] for r in rows) / 3600.0,
        "speakers": len({r["speaker"] for r in rows}),
        "splits": table,
    }


def plan_dict(plan: ClipPlan) -> dict:
    """JSON-compatible dict of a plan."""
    return asdict(plan)
