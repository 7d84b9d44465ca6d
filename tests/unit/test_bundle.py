"""Model bundle: atomic round trip, validation with clear errors, Generator.from_bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from disenttalk.audio import make_frontend
from disenttalk.bundle import BundleError, load_bundle, load_into, write_bundle
from disenttalk.face.regions import RegionSplit
from disenttalk.generate import Generator
from disenttalk.model.config import AudioConfig, DenoiserConfig, ModelConfig
from disenttalk.model.denoiser import Denoiser

N = 12
SPLIT = RegionSplit.contiguous(N, k_lip=3, k_eye=2)
CFG = ModelConfig(audio=AudioConfig(n_mels=8), denoiser=DenoiserConfig(dim=16, num_blocks=2, heads=2),
                  n_expression=N, k_lip=3, k_eye=2)


def expert() -> nn.Module:
    try:
        from disenttalk.model.sync import SyncExpert
    except ImportError:  # the sync expert is optional for these tests: any state dict will do
        return nn.Linear(4, 4)
    return SyncExpert(CFG.sync, make_frontend(CFG.audio).feature_dim, len(SPLIT.lip))


@pytest.fixture(scope="module")
def parts():
    den = Denoiser(CFG.denoiser, SPLIT, make_frontend(CFG.audio).feature_dim)
    with torch.no_grad():  # the output layer starts at zero; give it weights so outputs differ
        den.out.weight.copy_(0.1 * torch.randn(den.out.weight.shape,
                                               generator=torch.Generator().manual_seed(0)))
    norm = {"mean": np.arange(N, dtype=np.float32), "std": np.full(N, 0.5, np.float32)}
    return den, expert(), norm


def write(path, parts, **kw):
    den, exp, norm = parts
    return write_bundle(path, config=CFG, morphable=None, split=SPLIT, norm=norm,
                        expert_state=exp.state_dict(), denoiser_state=den.state_dict(), **kw)


def test_round_trip_same_outputs(tmp_path, parts):
    den, exp, norm = parts
    write(tmp_path / "b", parts, extra={"metrics": {"lse_c": 7.1}, "guidance": 1.7})
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(
        ["config.json", "regions.json", "norm.npz", "sync_expert.pt", "denoiser.pt", "meta.json"])
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temp dirs left behind
    b = load_bundle(tmp_path / "b")
    assert b.config == CFG and b.split == SPLIT and b.morphable is None
    assert np.array_equal(b.norm["mean"], norm["mean"]) and np.array_equal(b.norm["std"], norm["std"])
    assert b.meta["metrics"] == {"lse_c": 7.1} and "created_at" in b.meta
    assert b.meta["versions"]["torch"] == torch.__version__
    den2 = load_into(Denoiser(CFG.denoiser, SPLIT, den.audio_dim), b.denoiser_state, "denoiser.pt")
    den.eval()
    g = torch.Generator().manual_seed(1)
    x, a = torch.randn(2, 9, N, generator=g), torch.randn(2, 9, den.audio_dim, generator=g)
    t = torch.tensor([3, 300])
    assert torch.equal(den(x, t, a), den2(x, t, a))
    ref = exp.state_dict()
    assert b.expert_state.keys() == ref.keys()
    assert all(torch.equal(v, ref[k]) for k, v in b.expert_state.items())


def test_generator_from_bundle(tmp_path, parts):
    write(tmp_path / "b", parts, extra={"guidance": 1.7})
    gen = Generator.from_bundle(tmp_path / "b", window=20, prefix=5)
    assert gen.default_guidance == 1.7
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    m1 = gen.motion(audio, 16000, steps=3, seed=2)
    assert m1.expression.shape == (25, N) and np.all(np.isfinite(m1.expression))
    m2 = Generator.from_bundle(tmp_path / "b", window=20, prefix=5).motion(audio, 16000, steps=3, seed=2)
    assert np.array_equal(m1.expression, m2.expression)


def test_write_is_atomic_and_refuses_to_clobber(tmp_path, parts):
    write(tmp_path / "b", parts)
    with pytest.raises(FileExistsError):
        write(tmp_path / "b", parts)
    # a failure half-way leaves neither a partial bundle nor a temp directory
    den, exp, norm = parts
    with pytest.raises(BundleError):
        write_bundle(tmp_path / "c", config=CFG, morphable=None, split=SPLIT,
                     norm={"mean": norm["mean"][:3], "std": norm["std"]},
                     expert_state={}, denoiser_state=den.state_dict())
    with pytest.raises(AttributeError):  # fails after the temp dir exists
        write_bundle(tmp_path / "c", config=CFG, morphable=object(), split=SPLIT, norm=norm,
                     expert_state={}, denoiser_state=den.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    write(tmp_path / "b", parts, overwrite=True, extra={"run": 2})
    assert load_bundle(tmp_path / "b").meta["run"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_blinks_round_trip_and_are_checked(tmp_path, parts):
    curves = np.zeros((3, 50), np.float32)
    curves[:, 20:25] = [0.3, 0.9, 1.0, 0.8, 0.2]
    curves[1, 40:] = np.nan  # a shorter curve, padded
    blinks = {"direction": np.array([0.5, -0.1], np.float32), "curves": curves}
    loaded = load_bundle(write(tmp_path / "b", parts, blinks=blinks)).blinks
    np.testing.assert_array_equal(loaded["direction"], blinks["direction"])
    np.testing.assert_array_equal(loaded["curves"], curves)
    assert load_bundle(write(tmp_path / "none", parts)).blinks is None
    with pytest.raises(BundleError, match="blinks.npz"):  # K_eye is 2
        write(tmp_path / "c", parts, blinks={"direction": np.zeros(3), "curves": curves})
    gap = curves.copy()
    gap[0, 10] = np.nan  # NaN inside a curve, not padding
    for bad in (curves * 2, gap):
        np.savez(tmp_path / "b" / "blinks.npz", direction=blinks["direction"], curves=bad)
        with pytest.raises(BundleError, match="not 0..1 followed by NaN padding"):
            load_bundle(tmp_path / "b")


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "denoiser.pt").unlink(), "missing denoiser.pt"),
    (lambda p: (p / "denoiser.pt").write_bytes(b"not a checkpoint"), "denoiser.pt"),
    (lambda p: (p / "config.json").write_text("{\"n_expression\": \"many\"}"), "ModelConfig"),
    (lambda p: (p / "regions.json").write_text(json.dumps(
        RegionSplit.contiguous(N, 4, 2).to_dict())), "K_lip=4"),
    (lambda p: np.savez(p / "norm.npz", mean=np.zeros(N), std=np.zeros(N)), "std must be positive"),
    (lambda p: np.savez(p / "norm.npz", mean=np.zeros(N)), "missing 'std'"),
    (lambda p: (p / "meta.json").write_text(json.dumps({"format_version": 99})), "newer"),
])
def test_load_names_the_broken_piece(tmp_path, parts, damage, message):
    path = write(tmp_path / "b", parts)
    damage(path)
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


def test_weights_that_do_not_fit_the_config(tmp_path, parts):
    path = write(tmp_path / "b", parts)
    b = load_bundle(path)
    wider = Denoiser(DenoiserConfig(dim=32, num_blocks=2, heads=2), SPLIT, parts[0].audio_dim)
    with pytest.raises(BundleError, match="denoiser.pt: weights do not match"):
        load_into(wider, b.denoiser_state, "denoiser.pt")
    with pytest.raises(BundleError, match="not a bundle"):
        load_bundle(tmp_path / "nowhere")
