"""Denoiser building blocks (paper Section III.B, Eq. 4–7).

Shapes: B batch, T frames (25 fps), D model width, N expression dims, F audio feature dims.
Every temporal operation is causal: convolutions are left-padded and attention masks hide the
future, so a block's output at frame t depends on frames ≤ t only, except that the audio
cross-attention (Eq. 6) may see ``look_ahead`` audio frames past t.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from disenttalk.face.regions import REGIONS, RegionSplit


def alibi_slopes(heads: int) -> torch.Tensor:
    """Per-head distance penalties 2^(-8h/H) (ALiBi): relative positions that extend to any T."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])


def attention_bias(
    t_q: int, t_k: int, slopes: torch.Tensor, look_ahead: int = 0
) -> torch.Tensor:
    """Additive bias [H,Tq,Tk]: -slope·|i-j| where key j ≤ i + look_ahead, -inf beyond (causal)."""
    i = torch.arange(t_q, device=slopes.device)[:, None]
    j = torch.arange(t_k, device=slopes.device)[None, :]
    bias = -slopes[:, None, None] * (i - j).abs().to(slopes.dtype)
    return bias.masked_fill(j > i + look_ahead, float("-inf"))


CAUSAL_CHUNK = 64  # query frames per chunk of a long causal attention


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
           dropout: float = 0.0, scale: float | None = None,
           look_ahead: int | None = None) -> torch.Tensor:
    """softmax(q kᵀ·scale + bias) v over [...,T,d], scale = 1/√d unless given (1.0 for keys
    scaled beforehand); written out because for short sequences on CPU this beats
    scaled_dot_product_attention's masked fallback path by about 2.5×.

    A power-of-two scale (d = 4, 16, 64, …) multiplies q, [T,d], instead of the scores, [T,T]:
    the same numbers, exactly; scale and bias go into the fresh scores in place.
    ``look_ahead``: the bias is causal (key j hidden beyond query i + look_ahead), so a long
    sequence runs in chunks of queries that score only the keys they can see (about 2/3 of
    the work at 160 frames; the same function, to float rounding of the softmax's sum).
    """
    t_q = q.shape[-2]
    if look_ahead is None or t_q < 2 * CAUSAL_CHUNK or torch.jit.is_tracing():
        return _attend(q, k, v, bias, dropout, scale)
    out = []
    for q0 in range(0, t_q, CAUSAL_CHUNK):
        q1 = min(t_q, q0 + CAUSAL_CHUNK)
        k1 = min(k.shape[-2], q1 + look_ahead)
        out.append(_attend(q[..., q0:q1, :], k[..., :k1, :], v[..., :k1, :], bias[..., q0:q1, :k1],
                           dropout, scale))
    return torch.cat(out, dim=-2)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
            dropout: float, scale: float | None) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if math.frexp(scale)[0] == 0.5:  # a power of two: scaling is exact wherever it happens
        scores = (q if scale == 1.0 else q * scale) @ k.transpose(-1, -2)
    else:
        scores = (q @ k.transpose(-1, -2)).mul_(scale)
    weights = torch.softmax(scores.add_(bias), dim=-1)
    return F.dropout(weights, dropout) @ v if dropout > 0 else weights @ v


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps: [B] long → [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(emb, (0, dim % 2))


def causal_depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     taps: list[list[int]]) -> torch.Tensor:
    """A left-padded depth-wise conv (groups = channels) over [B,T,C] as shifted multiply-adds.

    ``weight`` [C·M,1,K] in Conv1d's grouped layout (output c·M+m reads channel c); ``taps[m]``
    the kernel positions that output m uses (the others must be zero) → [B,T,C·M]. The same
    function as ``F.conv1d`` on the left-padded input (to float rounding: its own summation
    order); on the CPU 1.3–3.6× faster for these shapes than oneDNN's grouped conv, and no
    layout transposes.
    """
    b, t, c = x.shape
    k = weight.shape[-1]
    m = weight.shape[0] // c
    w = weight.view(c, m, k)
    xp = F.pad(x, (0, 0, k - 1, 0))  # [B,T+K-1,C]: position j of the kernel reads frame t-(K-1)+j
    start = bias.view(c, m) if bias is not None else x.new_zeros(c, m)
    branches = []
    for i, positions in enumerate(taps):  # fresh tensors updated in place (no views: exportable)
        branch = torch.addcmul(start[:, i], xp[:, positions[0]:positions[0] + t], w[:, i, positions[0]])
        for j in positions[1:]:
            branch.addcmul_(xp[:, j:j + t], w[:, i, j])
        branches.append(branch)
    return torch.stack(branches, dim=-1).view(b, t, c * m)


class CausalConv1d(nn.Conv1d):
    """Conv1d over [B,T,C] that pads only on the left, so output t sees inputs ≤ t."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,T,C] → [B,T,C']
        pad = self.dilation[0] * (self.kernel_size[0] - 1)
        return super().forward(F.pad(x.transpose(1, 2), (pad, 0))).transpose(1, 2)


class RegionAwareSpatialAttention(nn.Module):
    """Eq. 4: F_spatial = W_f [Attention(E_r)]_{r∈{lip,eye,global}}, causal over time per region."""

    def __init__(self, dim: int, heads: int, split: RegionSplit, in_channels: int, dropout: float,
                 region_dim: int | None = None):
        super().__init__()
        self.heads = heads
        width = region_dim or dim  # each branch runs at this width; W_f maps back to dim
        regions = len(REGIONS)
        # E_r: region r's dims (from the split) of each of the in_channels stacked inputs
        # ([x_t, cond·mask, mask]) projected to features. All regions run as one linear map
        # whose weight is masked block-wise, so branch r sees only its own parameters.
        n = split.num_dims
        mask = torch.zeros(regions, width, in_channels, n)
        for r, region in enumerate(REGIONS):
            mask[r, :, :, list(split.indices(region))] = 1.0
        self.register_buffer("embed_mask", mask.view(regions * width, in_channels * n),
                             persistent=False)
        self.embed = nn.Linear(in_channels * n, regions * width)
        sizes = torch.tensor([float(len(split.indices(r))) for r in REGIONS])
        with torch.no_grad():  # default init assumes fan-in C·N; a branch's fan-in is C·|r|
            self.embed.weight.mul_((n / sizes.clamp(min=1)).sqrt().repeat_interleave(width)[:, None])
        self.qkv = nn.Linear(dim, 3 * regions * width)  # per-region Q, K, V from the hidden state
        self.fuse = nn.Linear(regions * width, dim)  # W_f
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)
        self.dropout = dropout

    def embed_weight(self) -> torch.Tensor:
        """The block-masked embedding weight [R·d, C·N]: branch r sees only region r's dims."""
        return self.embed.weight * self.embed_mask

    def forward(self, h: torch.Tensor, e: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """h [B,T,D] hidden state, e [B,T,C·N] stacked raw inputs → F_spatial [B,T,D]."""
        # region tokens' own parameters, [B,T,R·d]
        return self.attend_regions(h, F.linear(e, self.embed_weight(), self.embed.bias), bias)

    def attend_regions(self, h: torch.Tensor, e_r: torch.Tensor,
                       bias: torch.Tensor | None = None) -> torch.Tensor:
        """h [B,T,D], e_r [B,T,R·d] embedded inputs (any strides) → F_spatial [B,T,D]."""
        b, t, regions = h.shape[0], h.shape[1], len(REGIONS)
        d = self.fuse.in_features // regions  # branch width
        # region tokens: hidden state plus that region's own parameters, [B,T,R,d]
        qkv = self.qkv(h).view(b, t, 3, regions, d) + e_r.unflatten(-1, (1, regions, d))
        # [B,T,3,R,d] → 3 × [B·R, H, T, d/H]: one causal attention over time per region, batched
        q, k, v = (qkv.view(b, t, 3, regions, self.heads, -1).permute(2, 0, 3, 4, 1, 5)
                   .reshape(3, b * regions, self.heads, t, -1))
        if bias is None:
            bias = attention_bias(t, t, self.slopes).to(h.dtype)
        out = attend(q, k, v, bias, self.dropout if self.training else 0.0,  # [B·R,H,T,d/H]
                     look_ahead=0)
        out = out.view(b, regions, self.heads, t, -1).permute(0, 3, 1, 2, 4)  # [B,T,R,H,d/H]
        return self.fuse(out.reshape(b, t, regions * d))  # concatenate regions, fuse (W_f)


class MultiScaleTemporalConv(nn.Module):
    """Eq. 5: F_temp = F_pw(Concat{F_dw^i(F_spatial)}), depth-wise causal convs, dilation 2^i.

    The depth-wise branches run as one grouped convolution (D groups, one output per branch):
    its kernel spans the largest dilation and a fixed tap mask leaves branch i the taps of
    dilation d_i only. Same function as separate convs, one call instead of one per branch.
    """

    def __init__(self, dim: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.dilations = tuple(dilations)
        span = (kernel - 1) * max(dilations) + 1
        self.depthwise = CausalConv1d(dim, len(dilations) * dim, span, groups=dim)  # F_dw^i
        taps = torch.zeros(len(dilations), span)
        # branch i's kernel positions; causal: the last position is the current frame
        self.positions = [[span - 1 - j * d for j in range(kernel)] for d in dilations]
        for i, positions in enumerate(self.positions):
            taps[i, positions] = 1.0
        # output channel c·R + i is branch i of input channel c (PyTorch's grouped layout)
        self.register_buffer("taps", taps.repeat(dim, 1)[:, None, :], persistent=False)
        with torch.no_grad():  # default init assumes fan-in = span; each branch has kernel taps
            self.depthwise.weight.mul_(math.sqrt(span / kernel))
        self.pointwise = nn.Linear(len(dilations) * dim, dim)  # F_pw, a 1×1 convolution

    def kernel(self) -> torch.Tensor:
        """The grouped kernel [D·R, 1, span] with each branch's taps only."""
        return self.depthwise.weight * self.taps

    def forward(self, x: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
        """[B,T,D] → [B,T,D]; ``kernel`` = :meth:`kernel` when the caller has it already."""
        branches = causal_depthwise(x, self.kernel() if kernel is None else kernel,
                                    self.depthwise.bias, self.positions)  # [B,T,D·R]
        return self.pointwise(F.gelu(branches))


class AudioExpressionCrossAttention(nn.Module):
    """Eq. 6: F_final = W_o [F_conv(F_temp); F_attn(F_temp, A)] + b_o."""

    def __init__(self, dim: int, heads: int, kernel: int, look_ahead: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.look_ahead = look_ahead
        self.local = CausalConv1d(dim, dim, kernel, groups=dim)  # F_conv: depth-wise, window k;
        # W_o below mixes its channels
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(2 * dim, dim)  # W_o, b_o
        self.register_buffer("slopes", alibi_slopes(heads), persistent=False)
        self.dropout = dropout

    def keys_values(self, audio: torch.Tensor) -> torch.Tensor:
        """Projected audio [B,Ta,D] → its keys and values [2,B,H,Ta,D/H] (fixed for a window);
        the keys come scaled by 1/√(D/H), so the scores [T,Ta] need no scaling of their own."""
        b, d = audio.shape[0], self.q.out_features
        kv = self.kv(audio).view(b, -1, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scale = torch.tensor([(d // self.heads) ** -0.5, 1.0], dtype=kv.dtype, device=kv.device)
        return kv * scale.view(2, 1, 1, 1, 1)

    def forward(self, x: torch.Tensor, audio: torch.Tensor | None,
                bias: torch.Tensor | None = None, kv: torch.Tensor | None = None) -> torch.Tensor:
        """x [B,T,D] expression features, audio [B,T,D] projected audio → [B,T,D];
        ``kv`` = :meth:`keys_values` of the audio when the caller has them already."""
        b, t, d = x.shape
        q = self.q(x).view(b, t, self.heads, -1).transpose(1, 2)  # [B,H,T,D/H]
        k, v = self.keys_values(audio) if kv is None else kv
        # causal cross-attention: frame t attends audio frames ≤ t + look_ahead, nearer ones more
        if bias is None:
            bias = attention_bias(t, k.shape[2], self.slopes, self.look_ahead).to(x.dtype)
        attn = attend(q, k, v, bias, self.dropout if self.training else 0.0, scale=1.0,
                      look_ahead=self.look_ahead)
        attn = attn.transpose(1, 2).reshape(b, t, d)
        local = causal_depthwise(x, self.local.weight, self.local.bias,
                                 [list(range(self.local.kernel_size[0]))])
        return self.out(torch.cat([F.gelu(local), attn], dim=-1))


class FiLM(nn.Module):
    """Eq. 7: F_out = γ(t)·F_final + β(t), with γ = 1 + Δγ so a fresh block starts as identity."""

    def __init__(self, dim: int, temb_dim: int):
        super().__init__()
        self.proj = nn.Linear(temb_dim, 2 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def coefficients(self, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """temb [B,E] or [1,E] (one timestep for all rows) → (γ, β), each [B|1,1,D]."""
        d_gamma, beta = self.proj(temb)[:, None, :].chunk(2, dim=-1)
        return 1.0 + d_gamma, beta

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None,
                coefficients: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x [B,T,D], temb [B,E] or [1,E] → [B,T,D]; or (γ, β) from :meth:`coefficients`."""
        gamma, beta = self.coefficients(temb) if coefficients is None else coefficients
        return gamma * x + beta


class DenoiserBlock(nn.Module):
    """One spatio-temporal block: Eq. 4 → Eq. 5 → Eq. 6 → Eq. 7, each with a pre-norm residual."""

    def __init__(self, dim: int, heads: int, split: RegionSplit, in_channels: int, *,
                 local_kernel: int, temporal_kernel: int, dilations: tuple[int, ...],
                 look_ahead: int, dropout: float, region_dim: int | None = None):
        super().__init__()
        self.norm_s, self.norm_t, self.norm_a = (nn.LayerNorm(dim) for _ in range(3))
        self.spatial = RegionAwareSpatialAttention(dim, heads, split, in_channels, dropout,
                                                   region_dim)
        self.temporal = MultiScaleTemporalConv(dim, temporal_kernel, dilations)
        self.cross = AudioExpressionCrossAttention(dim, heads, local_kernel, look_ahead, dropout)
        self.film = FiLM(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, e: torch.Tensor, audio: torch.Tensor, temb: torch.Tensor,
                biases: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """h [B,T,D], e [B,T,C·N], audio [B,T,D], temb [B,D] or [1,D] → [B,T,D].

        ``biases`` = (self-attention, cross-attention) masks, shared by all blocks of a stack.
        """
        e_r = F.linear(e, self.spatial.embed_weight(), self.spatial.embed.bias)
        return self.run(h, e_r, self.cross.keys_values(audio), self.film.coefficients(temb),
                        biases)

    def run(self, h: torch.Tensor, e_r: torch.Tensor, kv: torch.Tensor,
            film: tuple[torch.Tensor, torch.Tensor],
            biases: tuple[torch.Tensor, torch.Tensor] | None = None,
            kernel: torch.Tensor | None = None) -> torch.Tensor:
        """The block on inputs prepared once per window or step: e_r [B,T,R·d] the embedded
        inputs, kv the audio's keys/values, film (γ, β), kernel the temporal conv's taps."""
        self_bias, cross_bias = biases if biases is not None else (None, None)
        h = h + self.drop(self.spatial.attend_regions(self.norm_s(h), e_r, self_bias))  # Eq. 4
        h = h + self.drop(self.temporal(self.norm_t(h), kernel))  # Eq. 5
        f = self.cross(self.norm_a(h), None, cross_bias, kv)  # Eq. 6
        return h + self.drop(self.film(f, None, film))  # Eq. 7
