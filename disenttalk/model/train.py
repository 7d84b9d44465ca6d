"""Pure training and evaluation steps for the sync expert and the denoiser (no Ray, no MLflow).

A batch is a dict of tensors: ``expression`` [B,T,N] (normalised) and ``audio`` [B,T,F]; an
optional ``lip`` [B,T,K] overrides ``expression[..., split.lip]`` for the sync expert. All
randomness (timesteps, noise, audio dropout, conditioning masks, negatives) comes from the
``generator`` argument, so a step is reproducible from its seed.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

from disenttalk.face.regions import RegionSplit
from disenttalk.model.diffusion import GaussianDiffusion
from disenttalk.model.losses import noise_loss, sync_bce, sync_loss, sync_probability
from disenttalk.model.sync import SyncExpert

Batch = dict[str, torch.Tensor]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann–Whitney U) identity; ties count half."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def lip_params(batch: Batch, split: RegionSplit | None, lip_dim: int) -> torch.Tensor:
    """Lip parameters [B,T,K]: ``batch["lip"]``, the split's lip dims of ``expression``, or
    ``expression`` itself when it already holds exactly K = lip_dim dims and no split is given."""
    if "lip" in batch:
        return batch["lip"]
    expression = batch["expression"]
    if split is not None:
        return expression[..., list(split.lip)]
    if expression.shape[-1] == lip_dim:
        return expression
    raise ValueError(f"expression has {expression.shape[-1]} dims, the expert expects {lip_dim} "
                     "lip dims: pass split= or a 'lip' entry")


def sample_sync_pairs(lip: torch.Tensor, audio: torch.Tensor, expert: SyncExpert,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Window pairs for Eq. 10: (audio [M,W,F], lip [M,W,K], y [M]), half aligned, half not.

    Each of ``windows_per_clip`` positions per clip gives one aligned pair and one negative:
    lips shifted in time by neg_min_shift..neg_max_shift frames (either direction, reflected to
    stay inside the clip), or lips of another clip in the batch at the same position.
    """
    cfg = expert.cfg
    b, t, _ = audio.shape
    w = cfg.window
    if t < w:
        raise ValueError(f"clips of {t} frames are shorter than the {w}-frame sync window")
    clip = torch.arange(b).repeat_interleave(cfg.windows_per_clip)  # [M]
    m = clip.numel()
    pos = torch.randint(0, t - w + 1, (m,), generator=generator)
    shift = torch.randint(cfg.neg_min_shift, cfg.neg_max_shift + 1, (m,), generator=generator)
    shift = shift * (torch.randint(0, 2, (m,), generator=generator) * 2 - 1)
    neg_pos = torch.where((pos + shift < 0) | (pos + shift > t - w), pos - shift, pos + shift)
    unshiftable = (neg_pos < 0) | (neg_pos > t - w)
    mismatch = torch.rand(m, generator=generator) < 0.5
    if b > 1:
        mismatch |= unshiftable
        other = (clip + torch.randint(1, b, (m,), generator=generator)) % b
    else:  # one clip: time shifts only
        other = clip
        mismatch = torch.zeros_like(mismatch)
    neg_clip = torch.where(mismatch, other, clip)
    neg_pos = torch.where(mismatch, pos, neg_pos.clamp(0, t - w))

    frames = torch.arange(w)

    def gather(x: torch.Tensor, c: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        # indices are drawn on the CPU generator; they index on the data's device
        return x[c[:, None].to(x.device), (p[:, None] + frames).to(x.device)]  # [M,W,C]

    a = gather(audio, clip, pos)
    lips = torch.cat([gather(lip, clip, pos), gather(lip, neg_clip, neg_pos)])
    y = torch.cat([torch.ones(m), torch.zeros(m)]).to(audio)  # labels on the data's device
    return torch.cat([a, a]), lips, y


def sync_train_step(expert: SyncExpert, batch: Batch, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, *, split: RegionSplit | None = None,
                    grad_clip: float = 1.0) -> dict[str, float]:
    """One Adam step of Eq. 10 on aligned vs shifted/mismatched windows."""
    expert.train()
    lip = lip_params(batch, split, expert.lip_dim)
    a, m, y = sample_sync_pairs(lip, batch["audio"], expert, generator)
    a_emb, m_emb = expert.embed_audio(a), expert.embed_lip(m)
    loss = sync_bce(a_emb, m_emb, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(expert.parameters(), grad_clip)
    optimizer.step()
    with torch.no_grad():
        p = sync_probability(a_emb, m_emb)
        acc = ((p > 0.5).to(y.dtype) == y).float().mean()
    return {"loss": float(loss.detach()), "acc": float(acc), "grad_norm": float(grad_norm)}


@torch.no_grad()
def sync_eval_step(expert: SyncExpert, batch: Batch, generator: torch.Generator, *,
                   split: RegionSplit | None = None) -> dict[str, float]:
    """Loss, accuracy, AUC and mean cosines of aligned vs misaligned windows."""
    expert.eval()
    lip = lip_params(batch, split, expert.lip_dim)
    a, m, y = sample_sync_pairs(lip, batch["audio"], expert, generator)
    a_emb, m_emb = expert.embed_audio(a), expert.embed_lip(m)
    p = sync_probability(a_emb, m_emb)
    cos = 2.0 * p - 1.0
    return {
        "loss": float(sync_bce(a_emb, m_emb, y)),
        "acc": float(((p > 0.5).to(y.dtype) == y).float().mean()),
        "auc": roc_auc(p.cpu().numpy(), y.cpu().numpy()),
        "cos_pos": float(cos[y == 1].mean()),
        "cos_neg": float(cos[y == 0].mean()),
    }


def random_cond_mask(shape: torch.Size, split: RegionSplit, generator: torch.Generator, *,
                     prefix_prob: float, max_prefix: int, region_prob: float) -> torch.Tensor:
    """Known-value mask [B,T,N] (1 = known) as the generator will use it.

    A known prefix of 1..max_prefix frames (all dims) stands for the previous window's tail;
    eye or global dims known on every frame stand for a reference video. Lips stay unknown:
    audio drives them.
    """
    b, t, n = shape
    mask = torch.zeros(b, t, n)
    if max_prefix > 0:
        has = torch.rand(b, generator=generator) < prefix_prob
        length = torch.randint(1, max_prefix + 1, (b,), generator=generator)
        prefix = has[:, None] & (torch.arange(t)[None, :] < length[:, None])  # [B,T]
        mask[prefix] = 1.0
    for region in ("eye", "global"):
        dims = torch.tensor(split.indices(region), dtype=torch.long)
        chosen = (torch.rand(b, generator=generator) < region_prob).float()  # [B]
        if dims.numel():
            mask[:, :, dims] = torch.maximum(mask[:, :, dims], chosen[:, None, None])
    return mask


def dim_weights(split: RegionSplit, lip_weight: float, device: torch.device | None = None) -> torch.Tensor:
    """Per-dim loss weights [N]: ``lip_weight`` on the lip dims, 1 elsewhere."""
    w = torch.ones(split.num_dims, device=device)
    if split.lip:
        w[list(split.lip)] = float(lip_weight)
    return w


def _denoiser_losses(denoiser: torch.nn.Module, diffusion: GaussianDiffusion, batch: Batch, *,
                     split: RegionSplit, expert: SyncExpert | None, sync_weight: float,
                     audio_drop_prob: float, generator: torch.Generator, mask_kwargs: dict | None,
                     lip_weight: float = 1.0, velocity_weight: float = 0.0
                     ) -> dict[str, torch.Tensor]:
    """L_noise (Eq. 8, on the network's target: ε, x0 or v) on unknown entries, lip dims weighted
    by ``lip_weight``; + λ·L_sync (Eq. 10) on x0̂'s lip dims; + a velocity term on x0̂'s
    frame-to-frame change (as in MDM), which keeps motion from jittering."""
    x0, audio = batch["expression"], batch["audio"]
    b = x0.shape[0]
    t = diffusion.sample_timesteps(b, generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    x_t = diffusion.q_sample(x0, t, noise)
    if mask_kwargs is None:
        mask = torch.zeros_like(x0)
    else:
        mask = random_cond_mask(x0.shape, split, generator, **mask_kwargs).to(x0)
    drop = (torch.rand(b, generator=generator) < audio_drop_prob).to(x0.device)
    out = denoiser(x_t, t, audio, cond=x0, cond_mask=mask, drop_audio=drop)
    # known entries are handed to the network (and pinned by the sampler): nothing to learn there
    weight = (1.0 - mask) * dim_weights(split, lip_weight, x0.device)
    l_noise = noise_loss(out, diffusion.target(x0, t, noise), weight=weight)
    x0_hat = torch.where(mask.bool(), x0, diffusion.to_x0(x_t, t, out))
    l_vel = torch.zeros((), device=x0.device)
    if velocity_weight > 0:
        l_vel = noise_loss(x0_hat.diff(dim=1), x0.diff(dim=1), weight=weight[:, 1:])
    l_sync = torch.zeros((), device=x0.device)
    keep = ~drop  # the sync loss needs the audio the lips should follow
    if expert is not None and sync_weight > 0 and bool(keep.any()):
        l_sync = sync_loss(expert, x0_hat[keep][..., list(split.lip)], audio[keep])
    return {"loss": l_noise + velocity_weight * l_vel + sync_weight * l_sync,
            "noise_loss": l_noise, "velocity_loss": l_vel, "sync_loss": l_sync}


def denoiser_train_step(denoiser: torch.nn.Module, diffusion: GaussianDiffusion, batch: Batch,
                        optimizer: torch.optim.Optimizer, *, split: RegionSplit,
                        expert: SyncExpert | None = None, sync_weight: float = 0.01,
                        audio_drop_prob: float = 0.1, generator: torch.Generator,
                        prefix_prob: float = 0.5, max_prefix: int = 20, region_prob: float = 0.2,
                        grad_clip: float = 1.0, lip_weight: float = 1.0,
                        velocity_weight: float = 0.0) -> dict[str, float]:
    """One step of L_total = L_noise + λ·L_sync; the expert (if any) is frozen here."""
    denoiser.train()
    if expert is not None:
        expert.eval().requires_grad_(False)
    losses = _denoiser_losses(
        denoiser, diffusion, batch, split=split, expert=expert, sync_weight=sync_weight,
        audio_drop_prob=audio_drop_prob, generator=generator, lip_weight=lip_weight,
        velocity_weight=velocity_weight, mask_kwargs={"prefix_prob": prefix_prob, "max_prefix": max_prefix,
                     "region_prob": region_prob})
    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(denoiser.parameters(), grad_clip)
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()} | {"grad_norm": float(grad_norm)}


@torch.no_grad()
def denoiser_eval_step(denoiser: torch.nn.Module, diffusion: GaussianDiffusion, batch: Batch, *,
                       split: RegionSplit, expert: SyncExpert | None = None,
                       sync_weight: float = 0.01, generator: torch.Generator,
                       lip_weight: float = 1.0, velocity_weight: float = 0.0) -> dict[str, float]:
    """Held-out losses at random timesteps, with audio and no known values."""
    denoiser.eval()
    if expert is not None:
        expert.eval()
    losses = _denoiser_losses(denoiser, diffusion, batch, split=split, expert=expert,
                              sync_weight=sync_weight, audio_drop_prob=0.0, generator=generator,
                              mask_kwargs=None, lip_weight=lip_weight,
                              velocity_weight=velocity_weight)
    return {k: float(v) for k, v in losses.items()}
