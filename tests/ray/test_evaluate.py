"""The evaluate stage on a tiny clip store and a random-weight bundle: tables, baselines, MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.ray.conftest import FPS, SR, portrait_frames, tone

pytestmark = pytest.mark.ray

CLIPS = (  # clip_id, split, language, tone frequency
    ("tr_a", "train", "en", 220.0),
    ("tr_b", "train", "zh", 330.0),
    ("va_a", "val", "en", 260.0),
    ("te_a", "test", "en", 300.0),
    ("xl_a", "test_xling", "es", 280.0),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory, astronaut):
    """A clip store written directly (video files + tracked records + index) with 5 short clips."""
    from disenttalk.face.tracker import FaceTracker
    from disenttalk.media import write_video
    from workflows import clipstore

    root = tmp_path_factory.mktemp("eval_store")
    frames = portrait_frames(astronaut, 1.6)
    tracks = FaceTracker().track(frames)
    rows = []
    for i, (cid, split, lang, freq) in enumerate(CLIPS):
        clip_frames = np.roll(frames, 3 * i, axis=0)  # different phase of the sway per clip
        landmarks = np.roll(tracks.landmarks, 3 * i, axis=0)
        audio = tone(len(frames) / FPS, freq)
        video = root / "videos" / f"{cid}.mp4"
        video.parent.mkdir(exist_ok=True)
        write_video(video, clip_frames, FPS, audio)
        rec = clipstore.ClipRecord(
            clip_id=cid, speaker=f"spk_{cid}", language=lang, split=split, fps=float(FPS),
            landmarks=landmarks, valid=np.isfinite(landmarks).all(axis=(1, 2)), audio=audio,
            sample_rate=SR, features=np.zeros((len(frames), 0), np.float32),
            source_uri=str(video), content_hash=f"{i:064x}",
        )
        rows.append(rec.index_row(clipstore.write_record(str(root), rec)))
    clipstore.write_table(str(root / clipstore.INDEX), rows, clipstore.INDEX_SCHEMA)
    return root, tracks.landmarks


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, store):
    """A bundle with random weights: tiny denoiser and sync expert, morphable model fit on the store."""
    import torch

    from disenttalk.audio import make_frontend
    from disenttalk.bundle import write_bundle
    from disenttalk.face.morphable import MorphableModel
    from disenttalk.face.regions import RegionSplit
    from disenttalk.model.config import DenoiserConfig, ModelConfig, SyncConfig
    from disenttalk.model.denoiser import Denoiser
    from disenttalk.model.diffusion import DiffusionConfig
    from disenttalk.model.sync import SyncExpert

    _, landmarks = store
    n, k_lip, k_eye = 8, 3, 2
    cfg = ModelConfig(
        denoiser=DenoiserConfig(dim=16, num_blocks=1, heads=2), diffusion=DiffusionConfig(num_timesteps=100),
        sync=SyncConfig(embed_dim=8, hidden=16), n_expression=n, k_lip=k_lip, k_eye=k_eye,
    )
    split = RegionSplit.contiguous(n, k_lip, k_eye)
    morphable = MorphableModel.fit([landmarks], n_expression=n)
    expression, _, _ = morphable.encode(landmarks)
    norm = {"mean": np.nanmean(expression, 0).astype(np.float32),
            # small std: random-weight samples stay near the mean face, so re-tracking finds it
            "std": (0.05 * np.nanstd(expression, 0) + 1e-4).astype(np.float32)}
    audio_dim = make_frontend(cfg.audio).feature_dim
    torch.manual_seed(0)
    denoiser = Denoiser(cfg.denoiser, split, audio_dim)
    expert = SyncExpert(cfg.sync, audio_dim, k_lip)
    path = tmp_path_factory.mktemp("bundle") / "bundle"
    write_bundle(path, config=cfg, morphable=morphable, split=split, norm=norm,
                 expert_state=expert.state_dict(), denoiser_state=denoiser.state_dict())
    return path


def test_evaluate_writes_tables_baselines_and_mlflow_metrics(ray_cluster, mlflow_uri, store, tiny_bundle,
                                                             tmp_path):
    import mlflow

    from disenttalk.metrics.clip import METRICS
    from workflows.evaluate import REFERENCES, EvaluateConfig, run

    root, _ = store
    cfg = EvaluateConfig().with_overrides([
        "steps=2", "cpbd_stride=10", "evaluator.steps=3", "evaluator.batch_size=4",
        "evaluator.sync.embed_dim=8", "evaluator.sync.hidden=16", "mlflow.experiment=evaluate-test",
    ])
    out = tmp_path / "eval"
    result = run(cfg, str(tiny_bundle), str(root), str(out))

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"val", "test", "test/en", "test_xling"}
    for row in metrics.values():
        assert set(row) == {"n_clips", *METRICS} and row["n_clips"] == 1
        assert row["lmd"] >= 0 and 0 <= row["cpbd"] <= 1 and np.isfinite(row["sync_conf"])
    baselines = json.loads((out / "baselines.json").read_text())
    assert set(baselines) == set(REFERENCES)
    assert all(set(b) == set(metrics) for b in baselines.values())
    assert baselines["still"]["val"]["landmark_change"] == 0.0
    assert baselines["truth"]["val"]["lmd"] == pytest.approx(0.0, abs=1e-9)
    assert baselines["shifted"]["val"]["lmd"] > 0
    assert (out / "metrics.md").read_text().count("| val |") == 1 + len(REFERENCES)
    assert sorted(p.name for p in (out / "plots").glob("val_*.png")) == [
        "val_change.png", "val_ear.png", "val_mouth.png"]
    assert (out / "evaluator" / "expert.pt").is_file()

    run_data = mlflow.get_run(result["run_id"]).data
    assert run_data.metrics["val/lmd"] == pytest.approx(metrics["val"]["lmd"])
    assert "test/en/sync_conf" in run_data.metrics
    assert "baseline/still/val/landmark_change" in run_data.metrics
