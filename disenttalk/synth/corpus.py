"""The demo corpus: plan clips, split them without leakage, render video + truth, write a manifest.

Splits. Speakers (shared by all languages) are shuffled with the seed and partitioned into
train / val / test speakers (60 / 15 / 25 %, at least one each); each language's sentence list is
shuffled and partitioned into train / val / test sentences (60 / 20 / 20 %). A language's clips
are divided 60 / 20 / 20 % among the splits, and a clip of split s is spoken by an s-speaker
reading s-sentences only, so no test (or val) speaker or sentence ever appears in train.
``test_xling`` holds clips in a further language that no other split uses (Spanish by default),
spoken by the test speakers: unseen language, unseen faces and voices.

Layout of the output folder::

    manifest.jsonl        one JSON line per clip: clip_id, path, truth, language, speaker,
                          portrait (the speaker's photo), sentence, duration_s, split, fps,
                          num_frames
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
) -> tuple[list[Speaker], list[ClipPlan]]:
    """Speakers and clip plans with leakage-free train/val/test (+ test_xling) splits.

    ``sentence_bank``: ``default`` (each language's first list) or ``large`` (its second list
    too, see ``disenttalk.synth.sentences``); the cross-lingual split reads the same bank."""
    if xling_language and xling_language in languages:
        raise ValueError(f"cross-lingual language {xling_language!r} is also a training language")
    if num_speakers < 3:
        raise ValueError("need at least 3 speakers (one per split)")
    speakers = make_speakers(num_speakers, seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A17]))
    spk_split = _split_items([s.speaker_id for s in speakers], SPEAKER_FRACTIONS, rng)
    plans: list[ClipPlan] = []

    def add(language: str, split: str, count: int, pool: list[str], voices: list[str]) -> None:
        for k in range(count):
            chosen = tuple(pool[(k * sentences_per_clip + j) % len(pool)] for j in range(sentences_per_clip))
            index = len(plans)
            plans.append(ClipPlan(
                clip_id=f"{language}_{split}_{k:03d}", language=language,
                speaker_id=voices[k % len(voices)], sentences=chosen, split=split,
                seed=(seed, 0xC11B, index),
            ))

    for language in languages:
        sent_split = _split_items(list(sentence_list(language, sentence_bank)), SENTENCE_FRACTIONS, rng)
        for split, count in zip(SPLITS, partition(clips_per_language, CLIP_FRACTIONS), strict=True):
            add(language, split, count, sent_split[split], spk_split[split])
    if xling_language:
        count = max(1, clips_per_language // 2) if xling_clips is None else xling_clips
        bank = sentence_list(xling_language, sentence_bank)
        pool = [bank[i] for i in rng.permutation(len(bank))]
        add(xling_language, XLING_SPLIT, count, pool, spk_split["test"])
    return speakers, plans


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
