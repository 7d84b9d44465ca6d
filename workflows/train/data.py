"""Training data for ``disenttalk train``: clips as (expression, audio features) pairs, windows.

A clip pairs the fit stage's expression array [T,N] with the preprocess stage's audio
features [T,F] (aligned to the same 25 fps frames). Windows of W frames are drawn only where
every frame is valid (face tracked, expression finite). Sampling is a pure function of a
``np.random.Generator`` so a resumed run redraws exactly the batches of the lost one.

Training clips can carry augmented variants (:func:`add_variants`, from
:mod:`disenttalk.augment`): the clip's audio noised, reverberated, band-limited, coded, levelled
or tempo-changed, featurised by the model's frontend, seeded by the run seed and the clip id, so
a resumed run makes the same ones. A tempo change stretches the truth to match
(:func:`stretch_truth`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from disenttalk.constants import SAMPLE_RATE
from workflows.platform import clipstore, storage

log = logging.getLogger(__name__)


@dataclass
class Clip:
    """One training sequence: expression [T,N] and audio features [T,F], valid frames only.

    ``waveform`` is the clip's audio (kept to make augmented variants); ``variants`` are such
    versions, each a Clip of its own (features of the augmented audio, the truth stretched to
    its length when its tempo changed), drawn by :class:`WindowSampler` in place of this one.
    """

    clip_id: str
    expression: np.ndarray  # float32 [T,N]
    audio: np.ndarray  # float32 [T,F]
    valid: np.ndarray  # bool [T]
    waveform: np.ndarray | None = None  # float32 [S] mono
    sample_rate: int = SAMPLE_RATE
    variants: list[Clip] = field(default_factory=list)
    tempo: float = 1.0  # a variant's tempo factor (> 1: faster, fewer frames)
    augmented: tuple[str, ...] = ()  # a variant's transforms, e.g. ("noise:pink:12.0dB",)

    def window_starts(self, window: int) -> np.ndarray:
        """Start frames s whose window [s, s+window) is entirely valid."""
        if len(self.valid) < window:
            return np.zeros(0, dtype=np.int64)
        ok = np.concatenate([[0], np.cumsum(self.valid.astype(np.int64))])
        counts = ok[window:] - ok[:-window]  # valid frames per window, [T-window+1]
        return np.flatnonzero(counts == window)


def clip_rows(data: str, fit: str, split: str) -> list[dict[str, Any]]:
    """Index rows of one split that the fit encoded (clips with a tracked face), stably ordered."""
    from workflows import fit as fit_stage

    rows = sorted(clipstore.read_index(data, split), key=lambda r: r["clip_id"])
    return [r for r in rows if storage.exists(storage.join(fit, fit_stage.motion_name(r)))]


def load_clip(data: str, fit: str, row: dict[str, Any]) -> Clip:
    """The clip of an index row: its features from the store, its expression from the fit."""
    from workflows import fit as fit_stage

    record = clipstore.read_record(data, row)
    expression = np.asarray(fit_stage.read_expression(fit, row)[0], dtype=np.float32)
    audio = np.asarray(record.features, dtype=np.float32)
    t = min(len(expression), len(audio), len(record.valid))
    expression, audio = expression[:t], audio[:t]
    valid = record.valid[:t] & np.isfinite(expression).all(-1) & np.isfinite(audio).all(-1)
    expression = np.where(valid[:, None], expression, 0.0).astype(np.float32)
    return Clip(row["clip_id"], expression, audio, valid,
                waveform=np.asarray(record.audio, dtype=np.float32), sample_rate=record.sample_rate)


# -- augmented variants -------------------------------------------------------------------------
def stretch_truth(expression: np.ndarray, valid: np.ndarray, factor: float,
                  frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The truth of audio played ``factor`` × faster, at ``frames`` frames.

    Output frame j (centred at (j + ½)/fps) shows the input at time (j + ½)·factor/fps, i.e. at
    fractional frame u = (j + ½)·factor − ½: ``expression`` is linearly interpolated there, and
    the frame is valid only if both input frames around u are (u is clamped to the clip).
    """
    t = len(expression)
    u = np.clip((np.arange(frames) + 0.5) * factor - 0.5, 0.0, t - 1)
    lo = np.floor(u).astype(np.int64)
    hi = np.minimum(lo + 1, t - 1)
    w = (u - lo).astype(np.float32)[:, None]
    out = (1 - w) * expression[lo] + w * expression[hi]
    ok = valid[lo] & valid[hi]
    return np.where(ok[:, None], out, 0.0).astype(np.float32), ok


def variant_seed(seed: int, clip_id: str, copy: int) -> np.random.SeedSequence:
    """The seed of variant ``copy`` of a clip: the run seed and the clip id, nothing else, so a
    resumed (or re-sharded) run makes the same variants."""
    digest = hashlib.sha256(clip_id.encode()).digest()
    return np.random.SeedSequence([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist(), copy])


def make_variants(clip: Clip, cfg: Any, frontend: Any, seed: int) -> list[Clip]:
    """``cfg.copies`` augmented versions of ``clip`` (an :class:`~disenttalk.augment.AugmentConfig`),
    featurised by ``frontend`` (the model's audio frontend); none without a waveform."""
    from disenttalk.augment import augment

    if clip.waveform is None or not len(clip.waveform) or not cfg.enabled:
        return []
    out = []
    for copy in range(cfg.copies):
        rng = np.random.default_rng(variant_seed(seed, clip.clip_id, copy))
        audio, factor, applied = augment(clip.waveform, clip.sample_rate, cfg, rng)
        frames = max(1, int(round(len(clip.valid) / factor)))
        if factor == 1.0:
            expression, valid = clip.expression, clip.valid
        else:
            expression, valid = stretch_truth(clip.expression, clip.valid, factor, frames)
        features = np.asarray(frontend(audio, clip.sample_rate, frames), dtype=np.float32)
        valid = valid & np.isfinite(features).all(-1)
        out.append(Clip(f"{clip.clip_id}#aug{copy}", expression, features, valid,
                        sample_rate=clip.sample_rate, tempo=factor, augmented=tuple(applied)))
    return out


_VARIANTS: dict[tuple[str, int, str, str], list[Clip]] = {}  # this process's variants, per clip


def add_variants(clips: list[Clip], cfg: Any, audio_cfg: Any, seed: int) -> dict[str, float]:
    """Give each of ``clips`` its augmented variants (in place; cached per clip in this process,
    keyed by the clip, the seed and both configs). Returns what it cost: clips, variants,
    seconds, and the largest gap between a clip's stored features and the frontend's on its
    audio (the preprocess and model audio settings should agree: ~0)."""
    from disenttalk.audio import make_frontend

    start = time.perf_counter()
    if not cfg.active:
        return {"clips": len(clips), "variants": 0, "made": 0, "seconds": 0.0, "feature_gap": 0.0}
    frontend, made, gap = None, 0, 0.0
    for clip in clips:
        key = (clip.clip_id, seed, cfg.to_json(), audio_cfg.to_json())
        if key not in _VARIANTS:
            frontend = frontend or make_frontend(audio_cfg)
            _VARIANTS[key] = make_variants(clip, cfg, frontend, seed)
            made += len(_VARIANTS[key])
            if clip.waveform is not None and len(clip.waveform) and clip.valid.any():
                ref = frontend(clip.waveform, clip.sample_rate, len(clip.valid))
                if ref.shape == clip.audio.shape:
                    gap = max(gap, float(np.abs(ref - clip.audio)[clip.valid].max()))
        clip.variants = _VARIANTS[key]
    stats = {"clips": len(clips), "variants": sum(len(c.variants) for c in clips), "made": made,
             "seconds": time.perf_counter() - start, "feature_gap": gap}
    if gap > 1e-3:
        log.warning("augment: the model's audio frontend does not reproduce the stored features "
                    "(max gap %.3g): variants and originals differ in more than the augmentation", gap)
    return stats


def norm_stats(data: str, fit: str, rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Mean and std per expression dim over every valid frame of ``rows`` (float64 sums)."""
    count, total, squares = 0, None, None
    for row in rows:
        clip = load_clip(data, fit, row)
        x = clip.expression[clip.valid].astype(np.float64)
        total = x.sum(0) if total is None else total + x.sum(0)
        squares = (x**2).sum(0) if squares is None else squares + (x**2).sum(0)
        count += len(x)
    if not count:
        raise ValueError("no valid frames in the training split")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    std = np.maximum(std, 1e-6 * max(float(std.max()), 1e-12))  # unused PCA dims: avoid /0
    return {"mean": mean.astype(np.float32), "std": std.astype(np.float32)}


def rest_expression(clips: list[Clip], quantile: float = 0.1) -> np.ndarray | None:
    """The corpus's face at rest [N]: the per-dim median expression over the quietest frames
    (lowest mean log-mel, i.e. pauses and silence around the speech) of ``clips``.

    Generation moves a portrait by ``expression − rest`` (the model's motion as a change from
    the face at rest). None when the clips have no valid frames.
    """
    energy = [c.audio[c.valid].mean(-1) for c in clips if c.valid.any()]
    if not energy:
        return None
    energy_all = np.concatenate(energy)
    expression = np.concatenate([c.expression[c.valid] for c in clips if c.valid.any()])
    quiet = energy_all <= np.quantile(energy_all, quantile)
    return np.median(expression[quiet], axis=0).astype(np.float32)


def blink_model(clips: list[Clip], eye: list[int], morphable: Any, min_length: int = 25,
                max_length: int = 750, max_curves: int = 64, floor: float = 0.15) -> dict[str, np.ndarray] | None:
    """The blinks of ``clips``: ``direction`` [K_eye] and closure ``curves`` [M, L].

    A clip's closure is 0..1 from its eye aspect ratio (its expression decoded on the mean face,
    both eyes averaged): 0 at the clip's median (open), 1 at the corpus's 1st percentile (shut);
    below ``floor`` it is tracker jitter and set to 0. The direction is the least-squares fit of
    the eye dims' deviation from each clip's median to that closure, so eye motion that does not
    go with blinks (and lip motion the eye dims share) averages out.

    Each curve is one clip's whole closure (clips longer than ``max_length`` frames are cut into
    pieces of at most that length; shorter than ``min_length`` are left out), NaN past its end,
    so chaining curves drawn uniformly gives the corpus's own blink rate: a fixed-length window
    from each clip's start would over-represent where clips begin.

    Eye motion does not follow the audio: blinks come when they come, both lids together, for
    100–400 ms. Generation sets the generated eyes' coordinate along this direction to the
    corpus's real closure curves (see ``Controls.blinks``). None when no clip has ``min_length``
    valid frames, there are no blinks or no eye dims.
    """
    from disenttalk.face.measures import eye_aspect_ratio

    if not eye:  # a one-region split has no eye dims to carry blinks
        return None
    per_clip = []
    for clip in clips:
        x = clip.expression[clip.valid].astype(np.float64)
        if len(x) < min_length:
            continue
        lm = morphable.decode(x, np.zeros((len(x), 6)), np.zeros(morphable.n_identity))
        per_clip.append((x[:, eye], eye_aspect_ratio(lm).mean(-1)))
    if not per_clip:
        return None
    shut = float(np.quantile(np.concatenate([e for _, e in per_clip]), 0.01))
    num, den, curves = np.zeros(len(eye)), 0.0, []
    for x, ear in per_clip:
        open_ = float(np.median(ear))
        c = np.clip((open_ - ear) / max(open_ - shut, 1e-6), 0.0, 1.0)
        c[c < floor] = 0.0
        num += c @ (x - np.median(x, axis=0))
        den += float(c @ c)
        pieces = -(-len(c) // max_length)
        curves += [p for p in np.array_split(c, pieces) if len(p) >= min(min_length, len(c))]
    if den <= 0:
        return None
    if len(curves) > max_curves:  # spread the choice over the clips
        curves = [curves[i] for i in np.linspace(0, len(curves) - 1, max_curves).round().astype(int)]
    out = np.full((len(curves), max(len(c) for c in curves)), np.nan, dtype=np.float32)
    for row, c in zip(out, curves, strict=True):
        row[: len(c)] = c
    return {"direction": (num / den).astype(np.float32), "curves": out}


class WindowSampler:
    """Uniform W-frame windows over a set of clips (every valid start equally likely).

    A clip with augmented ``variants`` gives, per window, its own features with probability
    ``keep_prob`` and otherwise one of its variants (uniformly; the window start is drawn over
    that variant's valid starts). Clips are drawn by their own valid starts either way.
    """

    def __init__(self, clips: list[Clip], window: int, norm: dict[str, np.ndarray],
                 keep_prob: float = 1.0) -> None:
        self.window = window
        self.keep_prob = float(keep_prob)
        self.mean = np.asarray(norm["mean"], dtype=np.float32)
        self.std = np.asarray(norm["std"], dtype=np.float32)
        starts = [c.window_starts(window) for c in clips]
        self.clips = [c for c, s in zip(clips, starts, strict=True) if len(s)]
        self.starts = [s for s in starts if len(s)]
        if not self.clips:
            raise ValueError(f"no clip has {window} consecutive valid frames")
        sizes = np.array([len(s) for s in self.starts], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.variants = []  # per clip: (variant, its valid starts) for variants with a window
        for clip in self.clips:
            pairs = [(v, v.window_starts(window)) for v in clip.variants]
            self.variants.append([(v, s) for v, s in pairs if len(s)])

    @property
    def num_windows(self) -> int:
        """How many distinct windows there are."""
        return int(sum(len(s) for s in self.starts))

    def sample(self, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """A batch: ``expression`` [B,W,N] (normalised) and ``audio`` [B,W,F]."""
        which = rng.choice(len(self.clips), size=batch_size, p=self.weights)
        expression, audio = [], []
        for i in which:
            clip, starts = self.clips[i], self.starts[i]
            options = self.variants[i]
            if options and rng.random() >= self.keep_prob:  # no draw without variants
                clip, starts = options[int(rng.integers(len(options)))]
            s = int(starts[rng.integers(len(starts))])
            expression.append(clip.expression[s : s + self.window])
            audio.append(clip.audio[s : s + self.window])
        x = (np.stack(expression) - self.mean) / self.std
        return {"expression": x.astype(np.float32), "audio": np.stack(audio).astype(np.float32)}


def shard_rows(rows: list[dict[str, Any]], rank: int, world: int) -> list[dict[str, Any]]:
    """This worker's clips (``rows[rank::world]``); every clip when there are fewer than workers."""
    mine = rows[rank::world]
    return mine if len(rows) >= world else list(rows)
