"""The spatio-temporal aware denoising network ε_θ(Z_t, t, A) (paper Section III.B).

The network sees the noisy expression sequence x_t together with known values ``cond·mask``
and the mask itself (1 = known), per frame and per dimension. A known prefix (the tail of the
previous window) makes windowed and streamed generation seamless; known eye dims on every frame
take the eyes from a reference. Audio is projected once and attended by every block; a learned
null embedding stands in for it when audio is absent (∅ in Eq. 9) or dropped in training.
"""

from __future__ import annotations

import torch
from torch import nn

from disenttalk.face.regions import RegionSplit
from disenttalk.model.blocks import DenoiserBlock, alibi_slopes, attention_bias, timestep_embedding
from disenttalk.model.config import DenoiserConfig

IN_CHANNELS = 3  # x_t, cond·mask, mask


class Denoiser(nn.Module):
    """ε-prediction network: blocks of Eq. 4–7 in an hourglass with long skip connections."""

    def __init__(self, cfg: DenoiserConfig, split: RegionSplit, audio_dim: int):
        super().__init__()
        self.cfg, self.split, self.audio_dim = cfg, split, audio_dim
        n, d = split.num_dims, cfg.dim
        self.inp = nn.Linear(IN_CHANNELS * n, d)
        self.audio_proj = nn.Sequential(nn.Linear(audio_dim, d), nn.GELU(), nn.Linear(d, d))
        self.null_audio = nn.Parameter(torch.zeros(d))  # ∅: learned "no audio" embedding
        nn.init.normal_(self.null_audio, std=0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(
            DenoiserBlock(d, cfg.heads, split, IN_CHANNELS, local_kernel=cfg.local_kernel,
                          temporal_kernel=cfg.temporal_kernel, dilations=cfg.dilations,
                          look_ahead=cfg.look_ahead, dropout=cfg.dropout,
                          region_dim=cfg.region_dim)
            for _ in range(cfg.num_blocks)
        )
        # hourglass: block i of the second half receives the output of its mirror in the first
        # half, concatenated and projected back to D
        self.skips = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(cfg.num_blocks // 2))
        self.out_norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, n)
        nn.init.zeros_(self.out.weight)  # start at ε̂ = 0, the mean of the target
        nn.init.zeros_(self.out.bias)

    def embed_audio(self, audio: torch.Tensor | None, drop_audio: torch.Tensor | None,
                    batch: int, frames: int) -> torch.Tensor:
        """Audio [B,T,F] (or None = ∅ for all) → [B,T,D]; rows with drop_audio get ∅."""
        null = self.null_audio.expand(batch, frames, -1)
        if audio is None:
            return null
        a = self.audio_proj(audio)
        if drop_audio is None:
            return a
        return torch.where(drop_audio.view(-1, 1, 1), null, a)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, audio: torch.Tensor | None,
                cond: torch.Tensor | None = None, cond_mask: torch.Tensor | None = None,
                drop_audio: torch.Tensor | None = None) -> torch.Tensor:
        """x_t [B,T,N], t [B], audio [B,T,F] | None, cond/cond_mask [B,T,N] → ε̂ [B,T,N]."""
        b, frames, _ = x_t.shape
        if cond is None or cond_mask is None:
            cond = cond_mask = torch.zeros_like(x_t)
        cond_mask = cond_mask.to(x_t.dtype)
        e = torch.cat([x_t, cond * cond_mask, cond_mask], dim=-1)  # [B,T,3N]
        a = self.embed_audio(audio, drop_audio, b, frames)  # [B,T,D]
        # sampling steps every row at one timestep: embedded once ([1,D], broadcast by FiLM), so
        # a row's numbers do not depend on how many rows share the batch (bit-identical batching)
        one = t.numel() > 0 and bool((t == t[0]).all())
        temb = self.time_mlp(timestep_embedding(t[:1] if one else t, self.cfg.dim))  # [1|B,D]
        slopes = alibi_slopes(self.cfg.heads).to(x_t.device)
        biases = (attention_bias(frames, frames, slopes).to(x_t.dtype),  # causal over time
                  attention_bias(frames, frames, slopes, self.cfg.look_ahead).to(x_t.dtype))
        h, stack = self.inp(e), []
        half = len(self.skips)
        for i, block in enumerate(self.blocks):
            if i >= len(self.blocks) - half:  # second half: merge the mirrored skip
                h = self.skips[len(self.blocks) - 1 - i](torch.cat([h, stack.pop()], dim=-1))
            h = block(h, e, a, temb, biases)
            if i < half:
                stack.append(h)
        return self.out(self.out_norm(h))

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
