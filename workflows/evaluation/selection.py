"""Which clips are scored, grouped how, and what the corpus manifest and the store tell about them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from workflows.evaluation.config import EvaluateConfig
from workflows.platform import clipstore


def select_clips(index: list[dict], cfg: EvaluateConfig) -> dict[str, list[dict]]:
    """Index rows per reported split (``test/<lang>`` included), at most ``max_clips_per_split``.

    The cap is shared round-robin across languages (clips by id within each), so a capped split
    still covers every language it holds. Splits without clips in the store are not reported.
    """
    groups: dict[str, list[dict]] = {}
    for split in cfg.splits:
        chosen = _round_robin(index, split, cfg.max_clips_per_split)
        if chosen:  # a split the store does not hold (test_voice of your own videos) is left out
            groups[split] = sorted(chosen, key=lambda r: r["clip_id"])
    for split in cfg.per_language:
        for lang in sorted({r["language"] for r in groups.get(split, [])}):
            groups[f"{split}/{lang}"] = [r for r in groups[split] if r["language"] == lang]
    return groups


def _round_robin(index: list[dict], split: str, cap: int) -> list[dict]:
    """Up to ``cap`` rows of ``split``, taken from its languages in turn (each language's by id)."""
    by_lang: dict[str, list[dict]] = {}
    for r in sorted((r for r in index if r["split"] == split), key=lambda r: r["clip_id"]):
        by_lang.setdefault(r["language"], []).append(r)
    queues = [by_lang[lang] for lang in sorted(by_lang)]
    chosen: list[dict] = []
    while len(chosen) < cap and any(queues):
        for queue in queues:
            if queue and len(chosen) < cap:
                chosen.append(queue.pop(0))
    return chosen


def voice_groups(groups: dict[str, list[dict]], info: dict[str, dict[str, Any]],
                 splits: tuple[str, ...]) -> dict[str, list[dict]]:
    """``<split>/<engine>/<voice>`` groups of ``splits``' clips by the voice the corpus manifest
    names for them (clips it names none for are left out)."""
    out: dict[str, list[dict]] = {}
    for split in splits:
        for row in groups.get(split, []):
            voice = info.get(row["clip_id"], {}).get("voice")
            if voice:
                out.setdefault(f"{split}/{voice}", []).append(row)
    return out


def corpus_info(corpus: str | None) -> dict[str, dict[str, Any]]:
    """Per clip id, what the corpus manifest adds to the clip store: ``blinks`` (how many the
    ``truth`` file's ``blinks`` [K,2] hold), ``seconds`` and ``blink_rate`` (their quotient), and
    ``portrait`` (absolute path of the speaker's photo) and ``voice`` (``engine/name``), each where
    the manifest has it."""
    info: dict[str, dict[str, Any]] = {}
    manifest = Path(corpus or "", "manifest.jsonl")
    if not corpus or not manifest.is_file():
        return info
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        if row.get("clip_id"):
            info.setdefault(row["clip_id"], {}).update(_manifest_entry(corpus, row))
    return info


def _manifest_entry(corpus: str, row: dict[str, Any]) -> dict[str, Any]:
    """What one manifest row tells about its clip (see :func:`corpus_info`)."""
    entry: dict[str, Any] = {}
    truth = Path(corpus, row.get("truth") or "")
    if row.get("truth") and truth.is_file() and row.get("duration_s"):
        with np.load(truth) as npz:
            if "blinks" in npz.files:
                entry["blinks"] = len(npz["blinks"])
                entry["seconds"] = float(row["duration_s"])
                entry["blink_rate"] = entry["blinks"] / entry["seconds"]
    if row.get("portrait") and Path(corpus, row["portrait"]).is_file():
        entry["portrait"] = str(Path(corpus, row["portrait"]).resolve())
    if row.get("voice"):
        entry["voice"] = str(row["voice"])
    return entry


def speaker_blink_rates(index: list[dict], data: str, clip_ids: list[str]) -> dict[str, dict[str, float]]:
    """Per clip id in ``clip_ids``: ``reference_blink_rate``, its speaker's blink rate over their
    *other* clips in the store (tracked landmarks, pooled: all blinks over all seconds; see
    ``blink_reference``), and ``reference_seconds``. Clips without a speaker, or whose speaker has
    no other clip, are left out. Reads only the evaluated speakers' records."""
    from disenttalk.metrics.landmarks import landmark_blink_count

    by_id = {r["clip_id"]: r for r in index}
    speakers = {by_id[c]["speaker"] for c in clip_ids if c in by_id and by_id[c].get("speaker")}
    counts: dict[str, tuple[str, int, float]] = {}  # clip id → (speaker, blinks, seconds)
    for row in index:
        if row.get("speaker") in speakers:
            rec = clipstore.read_record(data, row)
            fps = float(rec.fps)
            counts[row["clip_id"]] = (row["speaker"], landmark_blink_count(rec.landmarks, fps),
                                      len(rec.landmarks) / fps)
    out: dict[str, dict[str, float]] = {}
    for clip_id in clip_ids:
        speaker = by_id.get(clip_id, {}).get("speaker")
        others = [(n, sec) for other, (spk, n, sec) in counts.items() if spk == speaker and other != clip_id]
        seconds = sum(sec for _, sec in others)
        if speaker and seconds > 0:
            out[clip_id] = {"reference_blink_rate": sum(n for n, _ in others) / seconds,
                            "reference_seconds": seconds}
    return out
