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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import Field

from disenttalk.config import StrictConfig
from disenttalk.model.config import AudioConfig, SyncConfig

if TYPE_CHECKING:
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


def sliding_windows(x: np.ndarray, window: int) -> np.ndarray:
    """All sliding windows of a sequence [T,C] → [T−W+1, W, C]."""
    view = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)  # [T−W+1, C, W]
    return np.ascontiguousarray(np.swapaxes(view, 1, 2))


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
    import torch

    with torch.no_grad():
        return _sweep(expert, audio, lip, window, max_offset, batch)


def _sweep(expert: Embedder, audio: np.ndarray, lip: np.ndarray, window: int, max_offset: int,
           batch: int) -> SyncScore:
    import torch

    audio, lip = np.asarray(audio, np.float32), np.asarray(lip, np.float32)
    t = min(len(audio), len(lip))
    if t < window + 2:
        raise ValueError(f"need at least {window + 2} frames for a sync sweep, got {t}")
    audio, lip = audio[:t], lip[:t]
    max_offset = min(max_offset, (t - window) // 2)
    n_win = t - window + 1

    def embed(fn, x: np.ndarray) -> torch.Tensor:
        xs = torch.from_numpy(sliding_windows(x, window))
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


# -- the evaluator expert -------------------------------------------------------------------------


class EvaluatorConfig(StrictConfig):
    """The evaluator sync expert: its own audio frontend, network size, seed and training budget."""

    audio: AudioConfig = AudioConfig()  # log-mel: no weights, independent of the model under test
    sync: SyncConfig = SyncConfig(embed_dim=64, hidden=128)
    steps: int = Field(300, ge=0)
    batch_size: int = Field(16, gt=0)
    seq_len: int = Field(50, gt=0)  # frames per training sequence (room for shifted negatives)
    lr: float = Field(1e-3, gt=0)
    seed: int = 7919  # its own seed: never the model's


@dataclass
class Evaluator:
    """A trained evaluator: expert, its audio frontend, the parameter normalisation, window length."""

    expert: Any
    frontend: Any
    norm: dict[str, np.ndarray]
    window: int
    lip: tuple[int, ...] | None = None  # the expression dims it reads (None: the scored bundle's lip dims)


def _crops(seqs: list[tuple[np.ndarray, np.ndarray]], length: int, batch: int,
           rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A batch of aligned (lip, audio) crops [B,L,·] from random clips at random starts."""
    import torch

    lips, audios = [], []
    for i in rng.integers(0, len(seqs), size=batch):
        audio, lip = seqs[i]
        start = int(rng.integers(0, len(lip) - length + 1))
        lips.append(lip[start : start + length])
        audios.append(audio[start : start + length])
    return {"lip": torch.from_numpy(np.stack(lips)), "audio": torch.from_numpy(np.stack(audios))}


def train_evaluator(seqs: list[tuple[np.ndarray, np.ndarray]], cfg: EvaluatorConfig) -> tuple[Any, list[dict]]:
    """Train a SyncExpert on ground-truth (audio features [T,F], lip params [T,K]) pairs; returns it and its log."""
    import torch

    from disenttalk.model.sync import SyncExpert
    from disenttalk.model.train import sync_train_step

    length = min(cfg.seq_len, min(len(lip) for _, lip in seqs))
    seqs = [(a, lip) for a, lip in seqs if len(lip) >= length]
    torch_gen = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    with torch.random.fork_rng(devices=[]):  # parameter init from the evaluator's own seed only
        torch.manual_seed(cfg.seed)
        expert = SyncExpert(cfg.sync, audio_dim=seqs[0][0].shape[1], lip_dim=seqs[0][1].shape[1])
    optimizer = torch.optim.Adam(expert.parameters(), lr=cfg.lr)
    expert.train()
    log = [sync_train_step(expert, _crops(seqs, length, cfg.batch_size, rng), optimizer, torch_gen)
           for _ in range(cfg.steps)]
    return expert.eval(), log


def save_evaluator(path: str | Path, expert: Any, cfg: EvaluatorConfig, norm: dict[str, np.ndarray],
                   info: dict) -> None:
    """Write expert weights, config, normalisation and ``info`` (e.g. the cache key) to a folder."""
    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(expert.state_dict(), path / "expert.pt")
    np.savez(path / "norm.npz", **norm)
    meta = {"config": cfg.to_dict(), "audio_dim": expert.audio_dim, "lip_dim": expert.lip_dim, **info}
    (path / "evaluator.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def load_evaluator(path: str | Path) -> Evaluator:
    """Read a folder written by :func:`save_evaluator`."""
    import torch

    from disenttalk.audio import make_frontend
    from disenttalk.model.sync import SyncExpert

    path = Path(path)
    meta = json.loads((path / "evaluator.json").read_text())
    cfg = EvaluatorConfig.from_dict(meta["config"])
    expert = SyncExpert(cfg.sync, audio_dim=meta["audio_dim"], lip_dim=meta["lip_dim"])
    expert.load_state_dict(torch.load(path / "expert.pt", map_location="cpu", weights_only=True))
    with np.load(path / "norm.npz") as npz:
        norm = {k: npz[k] for k in npz.files}
    lip = tuple(int(i) for i in meta["lip_dims"]) if "lip_dims" in meta else None
    return Evaluator(expert.eval(), make_frontend(cfg.audio), norm, cfg.sync.window, lip)
