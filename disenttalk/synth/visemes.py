"""IPA phonemes → visemes → mouth targets over time, with coarticulation by dominance functions.

Each phoneme maps to one viseme (a diphthong to one per vowel, splitting its time), each viseme
to targets for three mouth parameters: ``open`` (jaw/lip opening, 0 closed … 1 wide), ``spread``
(lip corners pulled apart, 0 … 1) and ``round`` (corners drawn in and lips protruded, 0 … 1).
Coarticulation follows Cohen & Massaro's dominance model: segment i pulls parameter p towards its
target with dominance D_ip(t) = α_ip on the segment and α_ip·exp(-(τ/θ)²) at distance τ outside
it (θ = 70 ms anticipating, 50 ms carrying over; the exponent c = 2 of their model), and

    p(t) = Σ_i D_ip(t)·T_ip / Σ_i D_ip(t).

Dominances differ per parameter: /p b m/ dominate opening (the lips must close) but not rounding,
so a rounded neighbour vowel rounds them; velars barely constrain the lips and take their shape
from the neighbours. Silence is a segment with the rest target (closed, neutral); dominance is cut
beyond 250 ms, so the mouth is exactly still and closed inside longer silences.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

PARAMS = ("open", "spread", "round")
ANTICIPATION_S = 0.07  # θ before a segment
CARRYOVER_S = 0.05  # θ after it
SUPPORT_S = 0.25  # dominance is zero further away


@dataclass(frozen=True)
class Viseme:
    """Mouth targets (open, spread, round) and per-parameter dominance α."""

    name: str
    target: tuple[float, float, float]
    alpha: tuple[float, float, float]


VISEMES: dict[str, Viseme] = {v.name: v for v in (
    Viseme("rest", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    Viseme("closed", (0.0, 0.0, 0.1), (10.0, 0.5, 0.5)),  # p b m: lips shut
    Viseme("labiodental", (0.08, 0.15, 0.0), (5.0, 1.0, 1.0)),  # f v: lower lip to teeth
    Viseme("dental", (0.2, 0.2, 0.0), (2.0, 0.5, 0.5)),  # θ ð: tongue between teeth
    Viseme("alveolar", (0.2, 0.25, 0.0), (1.0, 0.3, 0.3)),  # t d n l s z r
    Viseme("postalveolar", (0.18, 0.0, 0.6), (1.5, 1.5, 2.0)),  # ʃ ʒ ɕ ʂ: lips protruded
    Viseme("velar", (0.3, 0.1, 0.0), (0.4, 0.2, 0.2)),  # k g ŋ h: lips free
    Viseme("w", (0.1, 0.0, 1.0), (2.0, 3.0, 3.0)),  # w ɥ: tight rounding
    Viseme("j", (0.15, 0.6, 0.0), (1.0, 1.5, 1.0)),  # j: spread
    Viseme("i", (0.25, 0.9, 0.0), (1.5, 2.0, 2.0)),  # close unrounded: i ɪ ɯ
    Viseme("u", (0.22, 0.0, 0.95), (1.5, 2.0, 2.5)),  # close rounded: u ʊ y
    Viseme("e", (0.5, 0.5, 0.0), (1.5, 1.5, 1.5)),  # mid unrounded: e ɛ
    Viseme("schwa", (0.4, 0.15, 0.0), (1.0, 0.7, 0.7)),  # ə ɜ ɚ ᵻ
    Viseme("o", (0.55, 0.0, 0.7), (1.5, 2.0, 2.0)),  # mid rounded: o ɔ ø
    Viseme("a", (1.0, 0.3, 0.0), (1.5, 1.0, 1.0)),  # open: a æ ɑ ɐ ʌ
)}

_CONSONANTS = {
    **dict.fromkeys("pbmɸβʙ", "closed"),
    **dict.fromkeys("fvɱʋ", "labiodental"),
    **dict.fromkeys("θð", "dental"),
    **dict.fromkeys("tdnlszɹrɾɬɫɮʦʣ", "alveolar"),
    **dict.fromkeys("ʃʒɕʑʂʐɻʧʤ", "postalveolar"),
    **dict.fromkeys("kgɡŋxɣχhɦʔqɢʁcɟçʝɲʎʀ", "velar"),
    **dict.fromkeys("wʍɥ", "w"),
    **dict.fromkeys("j", "j"),
}
_VOWELS = {
    **dict.fromkeys("iɪɨɯ", "i"),
    **dict.fromkeys("uʊyʏʉ", "u"),
    **dict.fromkeys("eɛɤ", "e"),
    **dict.fromkeys("əɘɜɚɝᵻɞ", "schwa"),
    **dict.fromkeys("oɔøœɵɒ", "o"),
    **dict.fromkeys("aæɑɐäɶʌ", "a"),
}
_IGNORED = set("ˈˌːˑ̩̯ʰʲʷˠˤ̃‿|-_'.0123456789")


def viseme_sequence(ipa: str) -> list[str]:
    """Visemes of one espeak-ng IPA phoneme: one per vowel letter, else one for the consonant."""
    # espeak-ng's Mandarin names retroflexes "s." / "z." (ʂ ʐ) and aspirates with a plain "h".
    ipa = ipa.replace("s.", "ʂ").replace("z.", "ʐ")
    chars = [c for c in unicodedata.normalize("NFD", ipa) if c not in _IGNORED and not unicodedata.combining(c)]
    if len(chars) > 1 and chars[-1] == "h":
        chars = chars[:-1]
    vowels = [_VOWELS[c] for c in chars if c in _VOWELS]
    if vowels:
        return vowels  # diphthongs (aɪ, oʊ, iɛ) glide through their vowels
    # Affricates and aspirated stops (tʃ, tɕ, ts, th): the last letter shapes the lips most.
    for c in reversed(chars):
        if c in _CONSONANTS:
            return [_CONSONANTS[c]]
    return ["schwa"] if chars else []


def segments(
    phonemes: Sequence[tuple[float, float, str]], duration_s: float
) -> list[tuple[float, float, str]]:
    """Viseme segments (start, end, viseme) covering [0, duration_s], silences as ``rest``."""
    out: list[tuple[float, float, str]] = []
    t = 0.0
    for start, end, ipa in sorted(phonemes):
        if start > t + 1e-3:
            out.append((t, start, "rest"))
        names = viseme_sequence(ipa)
        if not names or end <= start:
            continue
        step = (end - start) / len(names)
        out.extend((start + k * step, start + (k + 1) * step, n) for k, n in enumerate(names))
        t = max(t, end)
    if duration_s > t + 1e-3:
        out.append((t, duration_s, "rest"))
    return out


def mouth_targets(
    phonemes: Sequence[tuple[float, float, str]], times: np.ndarray, duration_s: float
) -> np.ndarray:
    """Coarticulated (open, spread, round) at ``times`` [T] (s) → [T,3] in [0,1]."""
    segs = segments(phonemes, duration_s)
    if not segs:
        return np.zeros((len(times), 3))
    start = np.array([s for s, _, _ in segs])[:, None]  # [N,1]
    end = np.array([e for _, e, _ in segs])[:, None]
    t = np.asarray(times, dtype=np.float64)[None, :]  # [1,T]
    # Distance outside each segment: positive before (anticipation), after (carry-over).
    before = np.clip(start - t, 0.0, None)
    after = np.clip(t - end, 0.0, None)
    shape = np.exp(-((before / ANTICIPATION_S) ** 2) - (after / CARRYOVER_S) ** 2)
    shape[(before > SUPPORT_S) | (after > SUPPORT_S)] = 0.0  # [N,T]
    alpha = np.array([VISEMES[n].alpha for _, _, n in segs])  # [N,3]
    target = np.array([VISEMES[n].target for _, _, n in segs])  # [N,3]
    dom = shape[:, :, None] * alpha[:, None, :]  # [N,T,3]
    num = (dom * target[:, None, :]).sum(0)
    den = dom.sum(0)
    return np.where(den > 0, num / np.maximum(den, 1e-12), 0.0)  # [T,3]


def frame_times(num_frames: int, fps: float) -> np.ndarray:
    """Centres of video frames (s): frame k covers [k/fps, (k+1)/fps)."""
    return (np.arange(num_frames) + 0.5) / fps
