"""Lip-sync expert (paper Eq. 10): parallel encoders f_a (audio) and f_m (lip parameters).

Both encoders see a short window (5 frames = 200 ms at 25 fps) and return L2-normalised
embeddings; similarity and the BCE loss live in :mod:`disenttalk.model.losses`. Once trained,
the expert is frozen and scores the denoiser's predicted lip parameters (L_sync).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from disenttalk.model.config import SyncConfig


class WindowEncoder(nn.Module):
    """[B,W,C] window → [B,D] unit vector: two temporal convs, then an MLP over the window."""

    def __init__(self, in_dim: int, window: int, hidden: int, embed_dim: int):
        super().__init__()
        self.window = window
        self.convs = nn.Sequential(
            nn.Conv1d(in_dim, hidden, 3, padding=1), nn.GELU(),
            nn.Conv1d(hidden, hidden, 3, padding=1), nn.GELU(),
        )
        # flattening keeps frame order, so the encoder can tell a window from its shifted copy
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(hidden * window, hidden), nn.GELU(), nn.Linear(hidden, embed_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,W,C] → [B,D]
        if x.shape[1] != self.window:
            raise ValueError(f"expected windows of {self.window} frames, got {x.shape[1]}")
        return F.normalize(self.head(self.convs(x.transpose(1, 2))), dim=-1)


class SyncExpert(nn.Module):
    """f_a(A) and f_m(E_lip) of Eq. 10, each L2-normalised."""

    def __init__(self, cfg: SyncConfig, audio_dim: int, lip_dim: int):
        super().__init__()
        self.cfg, self.audio_dim, self.lip_dim = cfg, audio_dim, lip_dim
        self.audio_encoder = WindowEncoder(audio_dim, cfg.window, cfg.hidden, cfg.embed_dim)  # f_a
        self.lip_encoder = WindowEncoder(lip_dim, cfg.window, cfg.hidden, cfg.embed_dim)  # f_m

    def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """audio [B,W,F] → f_a(A)/‖f_a(A)‖ [B,D]."""
        return self.audio_encoder(audio)

    def embed_lip(self, lip: torch.Tensor) -> torch.Tensor:
        """lip [B,W,K] → f_m(E_m)/‖f_m(E_m)‖ [B,D]."""
        return self.lip_encoder(lip)
