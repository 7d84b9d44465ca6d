"""The train stage on Ray Train V2: both phases on tiny synthetic data, a worker killed after the
first checkpoint and the run resuming from it, checkpoints, the bundle, the MLflow run."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from disenttalk.face.regions import RegionSplit
from workflows import fit as fit_stage
from workflows.platform import clipstore, storage

N, K_LIP, K_EYE, N_MELS, FRAMES = 12, 4, 3, 8, 48
SYNC_STEPS, DENOISER_STEPS, EVERY = 4, 4, 2
FRAMING = {"crop_size": 192, "crop_margin": 0.25}  # as preprocess records it in the store summary

TINY = [
    f"train.sync_steps={SYNC_STEPS}", f"train.denoiser_steps={DENOISER_STEPS}",
    "train.window=16", "train.batch_size=4", "train.max_prefix=4",
    f"run.checkpoint_every={EVERY}", "run.log_every=1", "run.val_batches=1", "run.num_to_keep=2",
    "run.max_failures=2", "scaling.num_workers=2", "scaling.cpus_per_worker=1.0",
    f"model.audio.n_mels={N_MELS}", "model.denoiser.dim=16", "model.denoiser.num_blocks=2",
    "model.denoiser.heads=2", "model.diffusion.num_timesteps=50", "model.sync.embed_dim=8",
    "model.sync.hidden=16", "model.sync.windows_per_clip=2", "model.sync.neg_min_shift=2",
    "model.sync.neg_max_shift=4", "ray.progress_bars=false",
]


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_tiny_corpus(root: Path, seed: int = 0) -> tuple[str, str]:
    """A clip store (4 train + 1 val clips) and fit outputs in the formats preprocess/fit write.

    Lip parameters follow a fixed linear map of the audio features, so there is something to
    learn; the first train clip has an untracked stretch that windows must avoid.
    """
    from disenttalk.face.morphable import MorphableModel

    rng = np.random.default_rng(seed)
    data, fit = str(root / "data"), str(root / "fit")
    mix = rng.standard_normal((2 * N_MELS, K_LIP)).astype(np.float32)
    rows, landmark_clips = [], []
    for i, split in enumerate(["train"] * 4 + ["val"]):
        features = rng.standard_normal((FRAMES, 2 * N_MELS)).astype(np.float32)
        expression = 0.1 * rng.standard_normal((FRAMES, N)).astype(np.float32)
        expression[:, :K_LIP] += features @ mix
        valid = np.ones(FRAMES, bool)
        if i == 0:
            valid[20:24] = False
        landmarks = rng.normal(128, 20, (FRAMES, 478, 3)).astype(np.float32)
        landmark_clips.append(landmarks)
        record = clipstore.ClipRecord(
            clip_id=f"clip{i}", speaker=f"spk{i % 2}", language="en", split=split, fps=25.0,
            landmarks=landmarks, valid=valid, audio=np.zeros(FRAMES * 640, np.float32),
            sample_rate=16000, features=features, source_uri=f"synthetic://{i}",
            content_hash=f"{i:064x}")
        row = record.index_row(clipstore.write_record(data, record))
        rows.append(row)
        storage.write_bytes(storage.join(fit, fit_stage.motion_name(row)), _npz(
            expression=expression, pose=np.zeros((FRAMES, 6), np.float32),
            identity=np.zeros(3, np.float32)))
    clipstore.write_table(storage.join(data, clipstore.INDEX), rows, clipstore.INDEX_SCHEMA)
    storage.write_text(storage.join(data, clipstore.SUMMARY), json.dumps({"framing": FRAMING}))
    RegionSplit.contiguous(N, K_LIP, K_EYE).save(Path(fit, fit_stage.REGIONS))
    MorphableModel.fit(landmark_clips[:4], n_expression=N).save(Path(fit, fit_stage.MORPHABLE))
    return data, fit


# -- no Ray: data, windows, config ----------------------------------------------------------
def test_windows_avoid_invalid_frames_and_are_reproducible(tmp_path):
    from workflows.train import data as train_data

    data, fit = write_tiny_corpus(tmp_path)
    rows = train_data.clip_rows(data, fit, "train")
    assert [r["clip_id"] for r in rows] == ["clip0", "clip1", "clip2", "clip3"]
    clip = train_data.load_clip(data, fit, rows[0])
    starts = clip.window_starts(16)
    assert len(starts) and all(not (s < 24 and s + 16 > 20) for s in starts)  # skips frames 20–23
    norm = train_data.norm_stats(data, fit, rows)
    stacked = np.concatenate([train_data.load_clip(data, fit, r).expression[
        train_data.load_clip(data, fit, r).valid] for r in rows])
    np.testing.assert_allclose(norm["mean"], stacked.mean(0), atol=1e-5)
    np.testing.assert_allclose(norm["std"], stacked.std(0), rtol=1e-4)
    sampler = train_data.WindowSampler([train_data.load_clip(data, fit, r) for r in rows], 16, norm)
    a = sampler.sample(8, np.random.default_rng(3))
    b = sampler.sample(8, np.random.default_rng(3))
    assert a["expression"].shape == (8, 16, N) and a["audio"].shape == (8, 16, 2 * N_MELS)
    np.testing.assert_array_equal(a["expression"], b["expression"])
    assert abs(float(sampler.sample(256, np.random.default_rng(0))["expression"].mean())) < 0.2


def test_stage_config_is_strict_and_takes_fit_dims(tmp_path):
    from disenttalk.config import ConfigError
    from workflows.train import load_stage_config, model_config_for

    cfg = load_stage_config(None, TINY)
    assert cfg.train.sync_steps == SYNC_STEPS and cfg.scaling.num_workers == 2
    with pytest.raises(ConfigError):
        load_stage_config(None, ["run.checkpoint_evry=3"])
    with pytest.raises(ConfigError):
        load_stage_config(None, ["scaling.num_workers=two"])
    model = model_config_for(cfg.model, RegionSplit.contiguous(N, K_LIP, K_EYE), 2 * N_MELS)
    assert (model.n_expression, model.k_lip, model.k_eye) == (N, K_LIP, K_EYE)
    with pytest.raises(ValueError, match="features"):
        model_config_for(cfg.model, RegionSplit.contiguous(N, K_LIP, K_EYE), 2 * N_MELS + 1)


# -- on Ray: one run with a worker killed after its first checkpoint -------------------------
def _train_workers() -> list:
    """This test cluster's Ray Train worker processes (descendants of this process only: other
    Ray clusters on the machine are left alone)."""
    import psutil

    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _kill_a_worker_after_first_checkpoint(run_dir: str, done: threading.Event, timeout: float = 300) -> dict:
    """SIGKILL one training worker as soon as a checkpoint is committed, as a lost node would."""
    snapshot = storage.join(run_dir, "checkpoint_manager_snapshot.json")
    deadline = time.monotonic() + timeout
    workers: list = []
    while time.monotonic() < deadline and not done.is_set():
        workers = workers or _train_workers()
        try:
            committed = json.loads(storage.read_text(snapshot))["checkpoint_results"]
        except (OSError, ValueError, KeyError):
            committed = []
        if committed and workers:
            victim = workers[0]
            victim.kill()
            return {"pid": victim.pid, "after": committed[-1]["checkpoint_dir_name"]}
        time.sleep(0.05)
    return {}


@pytest.fixture(scope="module")
def trained(ray_cluster, mlflow_uri, tmp_path_factory):
    from workflows import train

    root = tmp_path_factory.mktemp("train")
    data, fit = write_tiny_corpus(root)
    cfg = train.load_stage_config(None, [*TINY, "mlflow.experiment=test-train"])
    out = "s3://disenttalk-train/out"  # checkpoints and bundle through the S3 protocol (moto)
    storage.ensure_bucket(out)
    done, result = threading.Event(), {}

    def run() -> None:
        try:
            result["summary"] = train.run(data, fit, out, cfg)
        finally:
            done.set()

    thread = threading.Thread(target=run)
    thread.start()
    killed = _kill_a_worker_after_first_checkpoint(storage.join(out, "ray", cfg.run.name), done)
    thread.join()
    return {"summary": result["summary"], "cfg": cfg, "out": out, "killed": killed, "root": root}


@pytest.mark.ray
def test_run_resumes_after_a_worker_dies(trained):
    summary = trained["summary"]
    assert trained["killed"], "the run ended before a worker could be killed"
    # the restarted workers continued from a committed checkpoint, not from step zero
    assert summary["resumed_from_step"] >= EVERY
    assert summary["final"]["global_step"] == SYNC_STEPS + DENOISER_STEPS
    assert summary["final"]["step"] == DENOISER_STEPS


@pytest.mark.ray
def test_checkpoints_hold_state_and_config(trained):
    from workflows.train.checkpoint import META_FILE, STATE_FILE
    from workflows.train.config import TrainStageConfig

    run_dir = storage.join(trained["out"], "ray", trained["cfg"].run.name)
    files = [f[len(run_dir) + 1 :] for f in storage.list_files(run_dir)]
    kept = sorted({f.split("/")[0] for f in files if "/" in f})
    assert kept == ["denoiser-0000002", "denoiser-0000004"]  # num_to_keep=2: older ones pruned
    latest = storage.join(run_dir, "denoiser-0000004")
    progress = json.loads(storage.read_text(storage.join(latest, META_FILE)))
    assert progress["phase"] == "denoiser" and progress["step"] == DENOISER_STEPS
    assert progress["mlflow_run_id"] == trained["summary"]["mlflow_run_id"]
    config = TrainStageConfig.from_json(storage.read_text(storage.join(latest, "config.json")))
    assert (config.model.n_expression, config.model.k_lip, config.model.k_eye) == (N, K_LIP, K_EYE)
    assert config == trained["cfg"].model_copy(update={"model": config.model})  # N etc. from the fit
    assert len(storage.read_bytes(storage.join(latest, STATE_FILE))) > 0


@pytest.mark.ray
def test_bundle_generates_motion(trained):
    from disenttalk import bundle as bundle_mod
    from disenttalk.generate.generator import Generator

    local = storage.download_dir(storage.join(trained["out"], "bundle"), trained["root"] / "bundle")
    b = bundle_mod.load_bundle(local)
    norm = json.loads(storage.read_text(storage.join(trained["out"], "norm.json")))
    np.testing.assert_allclose(b.norm["mean"], norm["mean"], rtol=1e-6)
    assert b.config.n_expression == N and b.morphable is not None
    assert b.meta["framing"] == FRAMING  # generation cuts portraits as preprocessing cut the clips
    gen = Generator.from_bundle(local, window=16, prefix=4)
    t = np.arange(16000) / 16000
    motion = gen.motion((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), steps=4)
    assert motion.expression.shape == (25, N) and np.isfinite(motion.expression).all()


@pytest.mark.ray
def test_learning_curve_scores_each_kept_checkpoint(trained, tmp_path):
    from workflows import curve

    data = str(trained["root"] / "data")
    points = curve.run(trained["out"], data, split="val", steps=3)
    assert [p["step"] for p in points] == [2, 4]  # the kept denoiser checkpoints, in order
    for p in points:
        assert p["clips"] == 1 and all(np.isfinite(p[k]) for k in ("lmd_model", "lmd_still", "lmd_oracle"))
    assert points[0]["lmd_model"] != points[1]["lmd_model"]  # each point uses its own weights
    assert points[0]["lmd_still"] == points[1]["lmd_still"]  # ... on the same clips
    curve.write(points, str(tmp_path), "val")
    written = json.loads((tmp_path / "curve.json").read_text())["points"]
    assert [(p["step"], p["lmd_model"]) for p in written] == [(p["step"], p["lmd_model"]) for p in points]
    assert (tmp_path / "curve.png").stat().st_size > 0 and (tmp_path / "curve.csv").read_text().startswith("step,")
    with pytest.raises(ValueError, match="no denoiser checkpoints"):
        curve.run(trained["out"], data, checkpoints=str(tmp_path))
    with pytest.raises(ValueError, match="no readable bundle"):
        curve.run(str(tmp_path), data)


@pytest.mark.ray
def test_mlflow_run_has_params_metrics_and_artifacts(trained, mlflow_uri):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(trained["summary"]["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.sync_weight"] == "0.01"
    assert run.data.params["scaling.num_workers"] == "2"
    assert run.data.params["model.n_expression"] == str(N)  # the fitted N, not the default 64
    assert run.data.tags["resumed_from_step"] == str(trained["summary"]["resumed_from_step"])
    sync = client.get_metric_history(run.info.run_id, "sync/loss")
    denoiser = client.get_metric_history(run.info.run_id, "denoiser/loss")
    assert {m.step for m in sync} == set(range(1, SYNC_STEPS + 1))
    assert {m.step for m in denoiser} == set(range(SYNC_STEPS + 1, SYNC_STEPS + DENOISER_STEPS + 1))
    assert "sync/val_auc" in run.data.metrics
    # sampled-lip validation at every denoiser checkpoint (inter-ocular units, finite, positive)
    lip = client.get_metric_history(run.info.run_id, "denoiser/val_lip_error")
    assert {m.step for m in lip} == {SYNC_STEPS + EVERY, SYNC_STEPS + DENOISER_STEPS}
    assert all(0 < m.value < 10 for m in lip)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"bundle", "loss.png"} <= artifacts
    files = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert {"bundle/denoiser.pt", "bundle/sync_expert.pt", "bundle/config.json"} <= files


@pytest.mark.ray
def test_rerun_with_same_name_resumes_and_extends(trained, mlflow_uri):
    """Starting the job again (same run name + storage) continues from the latest checkpoint:
    here with a longer denoiser budget, so only the extra steps run (on one worker)."""
    import mlflow

    from workflows import train

    cfg = train.load_stage_config(
        None, [*TINY, "mlflow.experiment=test-train", "scaling.num_workers=1",
               f"train.denoiser_steps={DENOISER_STEPS + EVERY}"])
    summary = train.run(str(trained["root"] / "data"), str(trained["root"] / "fit"),
                        trained["out"], cfg)
    assert summary["resumed_from_step"] == SYNC_STEPS + DENOISER_STEPS
    assert summary["final"]["global_step"] == SYNC_STEPS + DENOISER_STEPS + EVERY
    assert summary["mlflow_run_id"] == trained["summary"]["mlflow_run_id"]  # one run, continued
    history = mlflow.MlflowClient(mlflow_uri).get_metric_history(summary["mlflow_run_id"],
                                                                 "denoiser/loss")
    assert max(m.step for m in history) == SYNC_STEPS + DENOISER_STEPS + EVERY
