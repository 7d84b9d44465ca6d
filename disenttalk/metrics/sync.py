"""Evaluator sync confidence: an offset sweep of audio vs lip-parameter windows, in the style of LSE-C.

LSE-C (SyncNet confidence) slides the audio against the video over ±15 frames, averages the
embedding distance over the clip at every offset, and reports median − minimum: a clip whose
lips follow its audio has one offset far closer than the rest. ``sync_conf`` does the same with
an *evaluator* sync expert: a :class:`~disenttalk.model.sync.SyncExpert` with its own seed,
trained on ground-truth clips only and never used as a training loss, reading windows of lip
expression parameters instead of mouth crops. Its values are not comparable with published
LSE-C numbers; they compare systems scored by the same evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

MAX_OFFSET = 15  # frames, SyncNet's default sweep (±0.6 s at 25 fps)


class Embedder(Protocol):
    """What the sweep needs from a sync expert: L2-normalised window embeddings."""

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor: ...  # [B,W,F] → [B,D]

    def embed_lip(self, lip: torch.Tensor) -> torch.Tensor: ...  # [B,W,K] → [B,D]


@dataclass(frozen=True)
class SyncScore:
    """Result of one sweep: confidence, best (minimum) mean distance, its offset, all distances."""

    conf: float  # median − min of the mean distances (higher = more confidently in sync)
    dist: float  # the minimum mean distance (lower = closer)
    offset: int  # audio frame − lip frame at the minimum: −8 means the lips lag the audio by 8 frames
    dists: np.ndarray  # [2·max_offset+1] mean distance per offset, from −max_offset to +max_offset


def windows(x: np.ndarray, window: int) -> np.ndarray:
    """All sliding windows of a sequence [T,C] → [T−W+1, W, C]."""
    view = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)  # [T−W+1, C, W]
    return np.ascontiguousarray(np.swapaxes(view, 1, 2))


@torch.no_grad()
def sync_sweep(
    expert: Embedder,
    audio: np.ndarray,
    lip: np.ndarray,
    *,
    window: int = 5,
    max_offset: int = MAX_OFFSET,
    batch: int = 512,
) -> SyncScore:
    """Sweep audio features [T,F] against lip parameters [T,K] over ±``max_offset`` frames.

    Every offset compares the same lip windows (those with a full sweep of audio windows on
    both sides), so the mean distances differ only by the offset. Clips shorter than
    ``window + 2·max_offset`` frames get a narrower sweep.
    """
    audio, lip = np.asarray(audio, np.float32), np.asarray(lip, np.float32)
    t = min(len(audio), len(lip))
    if t < window + 2:
        raise ValueError(f"need at least {window + 2} frames for a sync sweep, got {t}")
    audio, lip = audio[:t], lip[:t]
    max_offset = min(max_offset, (t - window) // 2)
    n_win = t - window + 1

    def embed(fn, x: np.ndarray) -> torch.Tensor:
        xs = torch.from_numpy(windows(x, window))
        return torch.cat([fn(xs[i : i + batch]) for i in range(0, len(xs), batch)])

    a = embed(expert.embed_audio, audio)  # [n_win, D]
    starts = np.arange(max_offset, n_win - max_offset)  # lip windows with every offset in range
    m = embed(expert.embed_lip, lip)[starts]  # [S, D]
    offsets = np.arange(-max_offset, max_offset + 1)
    dists = np.array([torch.linalg.vector_norm(m - a[starts + o], dim=-1).mean().item() for o in offsets])
    best = int(np.argmin(dists))
    return SyncScore(
        conf=float(np.median(dists) - dists[best]),
        dist=float(dists[best]),
        offset=int(offsets[best]),
        dists=dists,
    )


def sync_conf(expert: Embedder, audio: np.ndarray, lip: np.ndarray, **kwargs) -> float:
    """Evaluator sync confidence (median − min distance over the offset sweep) of one clip."""
    return sync_sweep(expert, audio, lip, **kwargs).conf
