"""Sync expert (Eq. 10): embeddings, losses, negative sampling, and learning to tell sync apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from disenttalk.model.config import SyncConfig
from disenttalk.model.losses import noise_loss, sync_bce, sync_loss, sync_probability, windows
from disenttalk.model.sync import SyncExpert
from disenttalk.model.train import roc_auc, sample_sync_pairs, sync_eval_step, sync_train_step

F, K = 12, 5
CFG = SyncConfig(embed_dim=32, hidden=64, windows_per_clip=8)


@pytest.fixture(autouse=True)
def _isolated_rng():
    """Module init draws from torch's global RNG; fork it so tests leave it untouched."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def synthetic(batch: int, frames: int, seed: int) -> dict[str, torch.Tensor]:
    """Lips = a fixed random linear map of smoothed audio features, plus noise."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, frames + 2, F, generator=g)
    audio = (z[:, :-2] + z[:, 1:-1] + z[:, 2:]) / 3.0
    mix = torch.randn(F, K, generator=torch.Generator().manual_seed(1234))  # the same map always
    lip = audio @ mix + 0.1 * torch.randn(batch, frames, K, generator=g)
    return {"audio": audio, "lip": lip, "expression": lip}


def test_embeddings_are_unit_vectors():
    expert = SyncExpert(CFG, F, K)
    a = expert.embed_audio(torch.randn(7, 5, F))
    m = expert.embed_lip(torch.randn(7, 5, K))
    assert a.shape == m.shape == (7, 32)
    assert torch.allclose(a.norm(dim=-1), torch.ones(7), atol=1e-5)
    assert torch.allclose(m.norm(dim=-1), torch.ones(7), atol=1e-5)
    with pytest.raises(ValueError):
        expert.embed_lip(torch.randn(2, 4, K))


def test_sync_bce_values():
    u = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    # identical embeddings: cos = 1 → p ≈ 1 → loss ≈ 0 for y = 1, large for y = 0
    assert float(sync_bce(u, u, torch.ones(4))) < 1e-4
    assert float(sync_bce(u, u, torch.zeros(4))) > 10.0
    # orthogonal embeddings: p = 1/2 → BCE = log 2 either way
    e = torch.eye(2)
    assert float(sync_bce(e[:1], e[1:], torch.ones(1))) == pytest.approx(np.log(2), rel=1e-5)
    assert torch.allclose(sync_probability(u, -u), torch.full((4,), 1e-6))


def test_noise_loss_weighting():
    eps, eps_hat = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    eps_hat[0] = 3.0
    weight = torch.zeros(2, 3, 4)
    weight[1] = 1.0
    assert float(noise_loss(eps_hat, eps)) == pytest.approx(5.0)
    assert float(noise_loss(eps_hat, eps, weight)) == pytest.approx(1.0)


def test_windows_cover_every_alignment():
    seq = torch.arange(2 * 7 * 1, dtype=torch.float32).view(2, 7, 1)
    w = windows(seq, 5)
    assert w.shape == (6, 5, 1)
    assert torch.equal(w[1, :, 0], torch.tensor([1.0, 2, 3, 4, 5]))
    assert torch.equal(w[3, :, 0], torch.tensor([7.0, 8, 9, 10, 11]))


def test_sync_loss_over_all_windows():
    expert = SyncExpert(CFG, F, K)
    data = synthetic(3, 20, seed=0)
    loss = sync_loss(expert, data["lip"], data["audio"])
    a = expert.embed_audio(windows(data["audio"], 5))
    m = expert.embed_lip(windows(data["lip"], 5))
    assert a.shape[0] == 3 * 16
    assert torch.allclose(loss, sync_bce(a, m, torch.ones(48)))


def test_negatives_are_misaligned():
    b, t = 4, 40
    # features that encode (clip, frame), so a pair is aligned iff the windows are identical
    index = torch.stack(torch.meshgrid(torch.arange(b), torch.arange(t), indexing="ij"), -1).float()
    expert = SyncExpert(CFG, 2, 2)
    a, m, y = sample_sync_pairs(index, index, expert, torch.Generator().manual_seed(0))
    assert a.shape == (2 * b * 8, 5, 2) and m.shape == a.shape
    same = (a == m).all(-1).all(-1)
    assert torch.equal(same, y.bool())
    neg = y == 0
    shifted = (a[neg, 0, 0] == m[neg, 0, 0])  # same clip → a time shift
    gap = (a[neg, 0, 1] - m[neg, 0, 1]).abs()
    assert (gap[shifted] >= CFG.neg_min_shift).all() and (gap[shifted] <= CFG.neg_max_shift).all()
    assert 0 < int(shifted.sum()) < int(neg.sum())  # both kinds occur
    # one clip only: time shifts only
    a1, m1, y1 = sample_sync_pairs(index[:1], index[:1], expert, torch.Generator().manual_seed(1))
    assert torch.equal((a1 == m1).all(-1).all(-1), y1.bool())


def test_lip_selection():
    from disenttalk.face.regions import RegionSplit
    from disenttalk.model.train import lip_params

    expression = torch.randn(2, 10, 7)
    split = RegionSplit(lip=(1, 4), eye=(0,), global_=(2, 3, 5, 6))
    assert torch.equal(lip_params({"expression": expression}, split, 2), expression[..., [1, 4]])
    assert torch.equal(lip_params({"expression": expression[..., :2]}, None, 2), expression[..., :2])
    with pytest.raises(ValueError):
        lip_params({"expression": expression}, None, 2)


def test_roc_auc_matches_definition():
    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=200), rng.integers(0, 2, 200)
    scores[labels == 1] += 1.0
    pairs = (scores[labels == 1][:, None] > scores[labels == 0][None, :]).mean()
    assert roc_auc(scores, labels) == pytest.approx(pairs)
    assert roc_auc(np.array([0.1, 0.1]), np.array([0, 1])) == 0.5


def test_expert_learns_to_separate_aligned_from_shifted():
    expert = SyncExpert(CFG, F, K)
    opt = torch.optim.Adam(expert.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    held_out = synthetic(16, 40, seed=999)
    before = sync_eval_step(expert, held_out, torch.Generator().manual_seed(5))
    for step in range(60):  # AUC passes 0.9 after ~25 steps
        stats = sync_train_step(expert, synthetic(16, 40, seed=step), opt, gen)
    after = sync_eval_step(expert, held_out, torch.Generator().manual_seed(5))
    assert np.isfinite(stats["loss"])
    assert after["auc"] >= 0.9, (before, after)
    assert after["loss"] < before["loss"] and after["cos_pos"] > after["cos_neg"]
