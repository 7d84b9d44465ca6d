"""Training objectives: the noise loss (Eq. 8) and the parameter-level lip-sync loss (Eq. 10)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from disenttalk.model.sync import SyncExpert

PROB_EPS = 1e-6  # keeps log() in the BCE finite at cos = ±1


def noise_loss(eps_hat: torch.Tensor, eps: torch.Tensor,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 8: ‖ε - ε_θ(Z_t, t, A)‖², averaged over entries (weighted, e.g. unknown entries only)."""
    err = (eps_hat - eps).pow(2)
    if weight is None:
        return err.mean()
    weight = weight.to(err.dtype).expand_as(err)
    return (err * weight).sum() / weight.sum().clamp(min=1.0)


def sync_probability(audio_emb: torch.Tensor, lip_emb: torch.Tensor) -> torch.Tensor:
    """P(in sync) = (cos + 1) / 2 of unit embeddings [B,D] → [B] in (0, 1).

    The affine map (rather than clamping negative cosines to 0) keeps a gradient for every pair.
    """
    cos = (audio_emb * lip_emb).sum(-1)
    return ((cos + 1.0) / 2.0).clamp(PROB_EPS, 1.0 - PROB_EPS)


def sync_bce(audio_emb: torch.Tensor, lip_emb: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 10: BCE(cos(f_a(A), f_m(E_m)) mapped to (0, 1), y), y = 1 for synchronised pairs."""
    return F.binary_cross_entropy(sync_probability(audio_emb, lip_emb), y.to(audio_emb.dtype))


def windows(seq: torch.Tensor, size: int) -> torch.Tensor:
    """All windows of ``size`` frames: [B,T,C] → [B·(T-size+1), size, C]."""
    if seq.shape[1] < size:
        raise ValueError(f"sequence of {seq.shape[1]} frames is shorter than a {size}-frame window")
    w = seq.unfold(1, size, 1)  # [B, T-size+1, C, size]
    return w.permute(0, 1, 3, 2).reshape(-1, size, seq.shape[-1])


def sync_loss(expert: SyncExpert, lip_seq: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """Eq. 10 with y = 1 over every aligned window of lip_seq [B,T,K] and audio [B,T,F]."""
    size = expert.cfg.window
    a, m = expert.embed_audio(windows(audio, size)), expert.embed_lip(windows(lip_seq, size))
    return sync_bce(a, m, torch.ones(a.shape[0], device=a.device))
