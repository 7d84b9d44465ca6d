"""The spatio-temporal aware denoising network ε_θ(Z_t, t, A) (paper Section III.B).

The network sees the noisy expression sequence x_t together with known values ``cond·mask``
and the mask itself (1 = known), per frame and per dimension. A known prefix (the tail of the
previous window) makes windowed and streamed generation seamless; known eye dims on every frame
take the eyes from a reference. Audio is projected once and attended by every block; a learned
null embedding stands in for it when audio is absent (∅ in Eq. 9) or dropped in training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
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

    def input_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The input embedding and every block's region embedding of the stacked inputs
        [x_t, cond·mask, mask] as one linear map: weight [D + L·R·d, 3N], bias."""
        weights = [self.inp.weight] + [blk.spatial.embed_weight() for blk in self.blocks]
        biases = [self.inp.bias] + [blk.spatial.embed.bias for blk in self.blocks]
        return torch.cat(weights), torch.cat(biases)

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
        temb = self.time_embedding(t)
        biases = self.attention_biases(frames, x_t.device, x_t.dtype)
        return self.trunk(self.inp(e), lambda i, h: self.blocks[i](h, e, a, temb, biases))

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """t [B] → [1,D] when every row is at one timestep, else [B,D].

        Sampling steps every row at one timestep: embedded once ([1,D], broadcast by FiLM), so a
        row's numbers do not depend on how many rows share the batch (bit-identical batching).
        """
        one = t.numel() > 0 and bool((t == t[0]).all())
        return self.time_mlp(timestep_embedding(t[:1] if one else t, self.cfg.dim))

    def attention_biases(self, frames: int, device: torch.device,
                         dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(self-attention, cross-attention) ALiBi biases [H,T,T]: causal over time; the audio
        cross-attention sees ``look_ahead`` frames ahead."""
        slopes = alibi_slopes(self.cfg.heads).to(device)
        return (attention_bias(frames, frames, slopes).to(dtype),
                attention_bias(frames, frames, slopes, self.cfg.look_ahead).to(dtype))

    def trunk(self, h: torch.Tensor, block: Callable[[int, torch.Tensor], torch.Tensor]
              ) -> torch.Tensor:
        """The hourglass over embedded inputs h [B,T,D]: ``block(i, h)`` runs block i → ε̂."""
        stack: list[torch.Tensor] = []
        half = len(self.skips)
        for i in range(len(self.blocks)):
            if i >= len(self.blocks) - half:  # second half: merge the mirrored skip
                h = self.skips[len(self.blocks) - 1 - i](torch.cat([h, stack.pop()], dim=-1))
            h = block(i, h)
            if i < half:
                stack.append(h)
        return self.out(self.out_norm(h))

    def bind(self, audio: torch.Tensor | None, cond: torch.Tensor | None,
             cond_mask: torch.Tensor | None, drop_audio: torch.Tensor | None = None
             ) -> BoundDenoiser:
        """ε̂(x_t, t) of one window: :meth:`forward` with ``audio``, ``cond``, ``cond_mask`` and
        ``drop_audio`` fixed, and everything they alone decide computed once (see
        :class:`BoundDenoiser`). Call it under ``torch.no_grad()`` for sampling."""
        return BoundDenoiser(self, audio, cond, cond_mask, drop_audio)

    def num_parameters(self) -> int:
        """Trainable parameter count."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class BoundDenoiser:
    """A :class:`Denoiser` bound to one window's audio and known values: ``bound(x_t, t) → ε̂``.

    Computed once at binding, reused by every sampler step: the projected audio (or ∅) and each
    block's cross-attention keys and values, the attention biases, the temporal convs' masked
    kernels, and the part of the input embedding and of each block's region embedding that
    comes from ``cond·mask`` and ``mask`` (those maps are linear in the stacked inputs
    [x_t, cond·mask, mask], so they split into an x_t part, computed per step as one matrix
    product for all blocks, plus this fixed part). FiLM's (γ, β) are kept per timestep.

    Same function as ``forward``; splitting the embeddings changes only the order of a sum,
    so ε̂ matches it to float rounding (max |Δ| ≤ 1e-5 on the shipped model). A row's numbers do
    not depend on the other rows of the batch (bit-identical), as in ``forward``.
    """

    def __init__(self, model: Denoiser, audio: torch.Tensor | None, cond: torch.Tensor | None,
                 cond_mask: torch.Tensor | None, drop_audio: torch.Tensor | None = None) -> None:
        ref = cond if cond is not None else audio
        if ref is None:
            raise ValueError("bind needs audio or cond to know the window's shape")
        self.model, n = model, model.split.num_dims
        self.batch, self.frames = b, frames = ref.shape[0], ref.shape[1]
        device = ref.device
        dtype = model.inp.weight.dtype
        if cond is None or cond_mask is None:
            cond = cond_mask = torch.zeros(b, frames, n, device=device, dtype=dtype)
        mask = cond_mask.to(dtype)
        weight, bias = model.input_weights()  # [D + L·R·d, 3N]
        self.x_weight = weight[:, :n].t().contiguous()  # [N, D + L·R·d]
        fixed = torch.cat([cond * mask, mask], dim=-1)  # [B,T,2N]
        self.fixed = F.linear(fixed, weight[:, n:], bias).reshape(b * frames, -1)
        a = model.embed_audio(audio, drop_audio, b, frames)
        self.kv = [blk.cross.keys_values(a) for blk in model.blocks]
        self.kernels = [blk.temporal.kernel() for blk in model.blocks]
        self.biases = model.attention_biases(frames, device, dtype)
        self.film: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.step: Callable[..., torch.Tensor] = bound_step  # fast.accelerate swaps in a compiled one

    def coefficients(self, t: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every block's FiLM (γ, β) at t [B]; kept per timestep when all rows share one."""
        one = t.numel() > 0 and bool((t == t[0]).all())
        key = int(t[0]) if one else None
        if key is not None and key in self.film:
            return self.film[key]
        temb = self.model.time_embedding(t)
        out = [blk.film.coefficients(temb) for blk in self.model.blocks]
        if key is not None:
            self.film[key] = out
        return out

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t [B,T,N] (the bound B and T), t [B] → ε̂ [B,T,N]."""
        if tuple(x_t.shape[:2]) != (self.batch, self.frames):
            raise ValueError(f"bound to [{self.batch},{self.frames},·], got x_t {tuple(x_t.shape)}")
        return self.step(self.model, x_t, self.fixed, self.x_weight, self.kv, self.kernels,
                         self.biases, self.coefficients(t))


def bound_step(model: Denoiser, x_t: torch.Tensor, fixed: torch.Tensor, x_weight: torch.Tensor,
               kv: list[torch.Tensor], kernels: list[torch.Tensor],
               biases: tuple[torch.Tensor, torch.Tensor],
               film: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """One evaluation of a :class:`BoundDenoiser`: a function of tensors only (compilable)."""
    b, frames, n = x_t.shape
    # [x_t part of every embedding] + the fixed part, one matrix product: [B·T, D + L·R·d]
    proj = torch.addmm(fixed, x_t.reshape(b * frames, n), x_weight).view(b, frames, -1)
    widths = [model.inp.out_features] + [blk.spatial.embed.out_features for blk in model.blocks]
    h, *e_r = proj.split(widths, dim=-1)
    blocks = model.blocks
    return model.trunk(h.contiguous(), lambda i, h: blocks[i].run(
        h, e_r[i], kv[i], film[i], biases, kernels[i]))
