"""Denoiser blocks (Eq. 4–7): shapes, causality, region separation, FiLM."""

from __future__ import annotations

import pytest
import torch

from disenttalk.face.regions import RegionSplit
from disenttalk.model.blocks import (
    AudioExpressionCrossAttention,
    CausalConv1d,
    DenoiserBlock,
    FiLM,
    MultiScaleTemporalConv,
    RegionAwareSpatialAttention,
    alibi_slopes,
    attention_bias,
    timestep_embedding,
)

B, T, D, H = 2, 12, 16, 4
SPLIT = RegionSplit(lip=(0, 3, 5), eye=(1, 6), global_=(2, 4, 7, 8, 9))  # interleaved dims


@pytest.fixture(autouse=True)
def _isolated_rng():
    """Module init draws from torch's global RNG; fork it so tests leave it untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_attention_bias_is_causal_with_look_ahead():
    bias = attention_bias(5, 5, alibi_slopes(2), look_ahead=1)
    assert bias.shape == (2, 5, 5)
    allowed = torch.isfinite(bias[0])
    assert torch.equal(allowed, torch.ones(5, 5, dtype=torch.bool).tril(1))
    assert bias[0, 3, 3] == 0 and bias[0, 3, 1] < bias[0, 3, 2] < 0  # nearer frames weigh more


def test_timestep_embedding():
    emb = timestep_embedding(torch.tensor([0, 5, 399]), 15)
    assert emb.shape == (3, 15)
    assert not torch.allclose(emb[1], emb[2])


def test_causal_conv_sees_only_the_past():
    conv = CausalConv1d(3, 3, 5, dilation=2)
    x = torch.randn(1, 20, 3, generator=_gen())
    y = conv(x)
    x2 = x.clone()
    x2[:, 10:] += 1.0
    y2 = conv(x2)
    assert y.shape == (1, 20, 3)
    assert torch.allclose(y[:, :10], y2[:, :10]) and not torch.allclose(y[:, 10:], y2[:, 10:])


def test_region_attention_shapes_and_separation():
    torch.manual_seed(0)
    attn = RegionAwareSpatialAttention(D, H, SPLIT, in_channels=3, dropout=0.0)
    h = torch.randn(B, T, D)
    e = torch.randn(B, T, 3 * SPLIT.num_dims)
    assert attn(h, e).shape == (B, T, D)
    # with the lip branch's share of W_f zeroed, lip parameters cannot reach the output
    with torch.no_grad():
        attn.fuse.weight[:, :D] = 0.0
    e2 = e.clone()
    for c in range(3):
        e2[..., [c * SPLIT.num_dims + i for i in SPLIT.lip]] += 1.0
    assert torch.allclose(attn(h, e), attn(h, e2), atol=1e-6)
    e3 = e.clone()
    e3[..., list(SPLIT.eye)] += 1.0
    assert not torch.allclose(attn(h, e), attn(h, e3), atol=1e-4)


def test_region_attention_is_causal():
    torch.manual_seed(1)
    attn = RegionAwareSpatialAttention(D, H, SPLIT, in_channels=3, dropout=0.0)
    h, e = torch.randn(B, T, D), torch.randn(B, T, 30)
    h2, e2 = h.clone(), e.clone()
    h2[:, 7:] += 1.0
    e2[:, 7:] -= 1.0
    assert torch.allclose(attn(h, e)[:, :7], attn(h2, e2)[:, :7], atol=1e-6)


def test_multiscale_temporal_conv():
    conv = MultiScaleTemporalConv(D, 3, (1, 2, 4))
    assert conv.depthwise.groups == D  # depth-wise
    x = torch.randn(B, T, D, generator=_gen())
    x2 = x.clone()
    x2[:, 6:] += 1.0
    assert conv(x).shape == (B, T, D)
    assert torch.allclose(conv(x)[:, :6], conv(x2)[:, :6], atol=1e-6)


@pytest.mark.parametrize("look_ahead", [0, 2])
def test_cross_attention_look_ahead(look_ahead):
    torch.manual_seed(2)
    xattn = AudioExpressionCrossAttention(D, H, 5, look_ahead, dropout=0.0)
    x, a = torch.randn(B, T, D), torch.randn(B, T, D)
    a2 = a.clone()
    a2[:, 8:] += 1.0
    y, y2 = xattn(x, a), xattn(x, a2)
    assert y.shape == (B, T, D)
    cut = 8 - look_ahead
    assert torch.allclose(y[:, :cut], y2[:, :cut], atol=1e-6)
    assert not torch.allclose(y[:, cut], y2[:, cut], atol=1e-4)


def test_film_starts_as_identity_and_depends_on_t():
    film = FiLM(D, 8)
    x, temb = torch.randn(B, T, D), torch.randn(B, 8)
    assert torch.equal(film(x, temb), x)
    torch.nn.init.normal_(film.proj.weight)
    y = film(x, temb)
    assert y.shape == (B, T, D) and not torch.allclose(y[0], x[0])


def test_multiscale_branches_equal_separate_dilated_convs():
    conv = MultiScaleTemporalConv(D, 3, (1, 2, 4))
    x = torch.randn(B, T, D, generator=_gen(3))
    weight = conv.depthwise.weight.view(D, 3, -1)  # [channel, branch, span]
    separate = []
    for i, d in enumerate((1, 2, 4)):
        ref = CausalConv1d(D, D, 3, dilation=d, groups=D)
        with torch.no_grad():  # branch i's taps, oldest first
            ref.weight.copy_(weight[:, i, [8 - 2 * d, 8 - d, 8]][:, None, :])
            ref.bias.copy_(conv.depthwise.bias.view(D, 3)[:, i])
        separate.append(ref(x))
    stacked = torch.stack(separate, dim=-1).reshape(B, T, 3 * D)  # channel-major, as grouped
    expected = conv.pointwise(torch.nn.functional.gelu(stacked))
    assert torch.allclose(conv(x), expected, atol=1e-5)


def test_denoiser_block_shape():
    block = DenoiserBlock(D, H, SPLIT, 3, local_kernel=5, temporal_kernel=3, dilations=(1, 2, 4),
                          look_ahead=0, dropout=0.1)
    out = block(torch.randn(B, T, D), torch.randn(B, T, 30), torch.randn(B, T, D),
                torch.randn(B, D))
    assert out.shape == (B, T, D)
