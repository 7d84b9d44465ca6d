"""disenttalk sweep: Ray Tune trials that are Ray Train runs, ASHA early stopping, nested MLflow
runs, registering the best bundle with the champion rule, resuming a killed sweep, and refusing
K values the fit cannot give."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.ray.conftest import FPS, SR, portrait_frames, tone

pytestmark = pytest.mark.ray

N_MELS = 8
TRAIN = [  # a tiny model and schedule: every trial trains in seconds
    "train.sync_steps=4", "train.denoiser_steps=30", "train.window=16", "train.batch_size=4",
    "train.max_prefix=4", "train.lr=3.0e-3", "train.lr_schedule=constant", "run.checkpoint_every=10",
    "run.val_batches=1", "run.num_to_keep=1", f"model.audio.n_mels={N_MELS}", "model.denoiser.dim=16",
    "model.denoiser.num_blocks=1", "model.denoiser.heads=2", "model.diffusion.num_timesteps=50",
    "model.sync.embed_dim=8", "model.sync.hidden=16", "model.sync.windows_per_clip=2",
    "model.sync.neg_min_shift=2", "model.sync.neg_max_shift=4",
]
# Two settings of λ; the second trains with a learning rate far too high (1.0), which throws its
# weights off at once (a frozen trial, lr 1e-7, stays at the initial model, whose val lip error is
# within a few percent of 20 steps' training: a coin toss at the rung). Both keep K_lip = 3, so
# their val lip errors are measured on the same dims (the resume test trains a K_lip = 2 trial).
# ASHA compares trials at the 2nd of 3 checkpoints (one rung, reduction factor 2); trials run one
# at a time in this order, so the first always completes and the second, behind it at the rung,
# is stopped.
VARIANTS = {
    "k3-l0.01": {"k_lip": 3, "sync_weight": 0.01},
    "k3-lr1": {"k_lip": 3, "sync_weight": 0.1, "train.lr": 1.0},
}
CLIPS = [("tr0", "train"), ("tr1", "train"), ("tr2", "train"), ("tr3", "train"),
         ("va0", "val"), ("va1", "val"), ("te0", "test")]


def sweep_config(tmp: Path, **over) -> dict:
    return {
        "name": "test-sweep", "variants": VARIANTS, "inference": {"guidance": [1.0, 2.0]},
        "max_concurrent_trials": 1, "train": TRAIN, "evaluator_steps": 20,
        "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2},
        "objective": {"split": "val", "max_clips": 2},
        "champion": {"enabled": True, "test_split": "test", "margin": 0.03},
        "mlflow": {"experiment": "sweep-test"}, **over,
    }


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory, astronaut, ray_cluster):
    """A store of short tracked clips of one face with tone audio and log-mel features, and its fit."""
    from disenttalk.audio import make_frontend
    from disenttalk.face.tracker import FaceTracker
    from disenttalk.media import write_video
    from disenttalk.model.config import AudioConfig
    from workflows import fit as fit_stage
    from workflows.platform import clipstore

    root = tmp_path_factory.mktemp("sweep_store")
    data, fit = root / "store", root / "fit"
    frames = portrait_frames(astronaut, 2.4)
    tracks = FaceTracker().track(frames)
    frontend = make_frontend(AudioConfig(n_mels=N_MELS))
    rows = []
    for i, (cid, split) in enumerate(CLIPS):
        clip_frames = np.roll(frames, 4 * i, axis=0)
        landmarks = np.roll(tracks.landmarks, 4 * i, axis=0)
        audio = tone(len(frames) / FPS, 200.0 + 30 * i) * (0.5 + 0.5 * np.sin(np.arange(len(frames) * 640) / 900.0))
        audio = audio.astype(np.float32)
        video = root / "videos" / f"{cid}.mp4"
        video.parent.mkdir(exist_ok=True)
        write_video(video, clip_frames, FPS, audio)
        rec = clipstore.ClipRecord(
            clip_id=cid, speaker=f"spk{i}", language="en" if i % 2 else "zh", split=split, fps=float(FPS),
            landmarks=landmarks, valid=np.isfinite(landmarks).all(axis=(1, 2)), audio=audio, sample_rate=SR,
            features=np.asarray(frontend(audio, SR, num_frames=len(frames)), np.float32),
            source_uri=str(video), content_hash=f"{i + 100:064x}")
        rows.append(rec.index_row(clipstore.write_record(str(data), rec)))
    clipstore.write_table(str(data / clipstore.INDEX), rows, clipstore.INDEX_SCHEMA)
    fit_stage.run(str(data), str(fit), fit_stage.FitConfig(
        n_expression=8, k_lip=3, k_eye=2, region_score="none", mlflow={"experiment": "sweep-test-fit"}))
    return str(data), str(fit)


@pytest.fixture(scope="module")
def swept(sweep_store, mlflow_uri, tmp_path_factory):
    from tune.config import SweepConfig
    from tune.sweep import run

    data, fit = sweep_store
    out = tmp_path_factory.mktemp("sweep") / "out"
    cfg = SweepConfig.from_dict(sweep_config(out))
    return run(cfg, data, fit, str(out)), cfg, out


def test_asha_stops_the_trial_that_falls_behind(swept):
    result, _, out = swept
    status = {row["trial"]: row["status"] for row in result["table"]}
    assert set(status) == set(VARIANTS)
    assert status["k3-l0.01"] == "completed"  # the first meets no other trial at its rung
    assert status["k3-lr1"].startswith("stopped early by ASHA")  # behind the first at the rung
    assert result["stopped_early"] == 1 and result["completed"] == 1
    assert (out / "trials.csv").is_file() and (out / "objective.png").read_bytes()[:4] == b"\x89PNG"


def test_each_trial_trains_with_its_own_split_and_keys(swept):
    from disenttalk.bundle import load_bundle

    result, _, _ = swept
    rows = {row["trial"]: row for row in result["table"]}
    for label in (t for t, r in rows.items() if r["status"] == "completed"):
        bundle = load_bundle(rows[label]["bundle"])
        assert len(bundle.split.lip) == VARIANTS[label]["k_lip"]
        meta = bundle.meta
        assert meta["guidance"] in (1.0, 2.0)  # chosen at inference, written into the bundle
        assert {r["guidance"] for r in meta["sweep"]["inference_search"]} == {1.0, 2.0}
        assert rows[label]["lmd"] > 0 and np.isfinite(rows[label]["blink_rate"])
    with open(Path(rows["k3-l0.01"]["bundle"]) / "config.json") as f:
        assert json.load(f)["k_lip"] == 3


def test_trials_are_nested_mlflow_runs_with_params_and_stop_reasons(swept, mlflow_uri):
    import mlflow

    result, _, _ = swept
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    parent = client.get_run(result["parent_run_id"])
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_trial = {c.data.tags["sweep.trial"]: c for c in children}
    assert set(by_trial) == set(VARIANTS)
    assert by_trial["k3-lr1"].data.params["train.sync_weight"] == "0.1"  # each trial its own keys
    assert by_trial["k3-l0.01"].data.params["train.sync_weight"] == "0.01"
    assert by_trial["k3-l0.01"].data.params["model.k_lip"] == "3"
    assert by_trial["k3-lr1"].data.params["train.lr"] == "1.0"
    assert by_trial["k3-lr1"].data.tags["stop_reason"].startswith("stopped early")
    assert by_trial["k3-lr1"].info.status == "KILLED"
    assert by_trial["k3-l0.01"].data.tags["stop_reason"] == "completed"
    assert "objective.lmd" in by_trial["k3-l0.01"].data.metrics
    assert len(client.get_metric_history(by_trial["k3-l0.01"].info.run_id, "denoiser/val_lip_error")) == 3
    artefacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "trials.md", "objective.png", "outcome.json"} <= artefacts


def test_best_is_registered_and_champion_moves_only_by_the_rule(swept, sweep_store, mlflow_uri, tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from disenttalk.constants import CHAMPION_ALIAS as CHAMPION
    from disenttalk.constants import MODEL_NAME
    from tune.champion import promote_best
    from tune.scoring import Yardstick, evaluator_basis, objective_rows, scoring_config
    from workflows.evaluation import evaluator_dir

    result, cfg, out = swept
    mlflow.set_tracking_uri(mlflow_uri)
    client = MlflowClient()
    outcome = result["champion"]
    version = client.get_model_version(MODEL_NAME, outcome["registered_version"])
    assert version.tags["metric.val/lmd"] == str(outcome["best"]["val"]["lmd"])
    champion = str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version)
    assert (champion == str(outcome["registered_version"])) == outcome["champion_moved"]
    if outcome["champion"] is not None:  # a champion existed: the margin rule decided
        expected = outcome["best"]["val"]["lmd"] < outcome["champion"]["val"]["lmd"] * (1 - cfg.champion.margin)
        assert outcome["champion_moved"] == expected

    data, fit = sweep_store
    best = next(r for r in result["table"] if r["status"] == "completed")
    rows = objective_rows(data, "val", 2)
    expert = str(evaluator_dir(data, str(out), evaluator_basis(data, fit, tmp_path / "basis"),
                               scoring_config(cfg), tmp_path))
    yardstick = Yardstick(data=data, expert_dir=expert, evaluate=scoring_config(cfg))
    # no champion: the best becomes it
    client.delete_registered_model_alias(MODEL_NAME, CHAMPION)
    first = promote_best(best, cfg, yardstick, rows, tmp_path / "a")
    assert first["champion"] is None and first["champion_moved"]
    # the same model again scores the same: not better by the margin, the alias stays
    again = promote_best(best, cfg, yardstick, rows, tmp_path / "b")
    assert again["champion"]["val"]["lmd"] == pytest.approx(again["best"]["val"]["lmd"])
    assert not again["champion_moved"]
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == str(first["registered_version"])
    assert again["champion"]["test"]["lmd"] > 0  # both test numbers are reported beside it


def test_k_outside_the_fit_is_refused_before_any_trial(sweep_store, tmp_path):
    from tune.config import SweepConfig
    from tune.sweep import run

    data, fit = sweep_store
    cfg = SweepConfig.from_dict(sweep_config(tmp_path, variants={"too-big": {"k_lip": 7, "k_eye": 2}}))
    with pytest.raises(ValueError, match=r"K_lip \+ K_eye = 7 \+ 2 = 9 exceeds the 8 expression dims"):
        run(cfg, data, fit, str(tmp_path / "out"))
    assert not (tmp_path / "out" / "tune").exists()  # nothing ran
    cfg = SweepConfig.from_dict(sweep_config(tmp_path, variants={}, space={"k_eye": {"grid": [0, 2]}}))
    with pytest.raises(ValueError, match="each region needs at least one dim"):
        run(cfg, data, fit, str(tmp_path / "out"))


def _finished_trials(experiment: Path) -> int:
    """Trials Tune's saved experiment state records as finished."""
    count = 0
    for state in experiment.glob("experiment_state-*.json"):
        try:
            text = state.read_text()
        except OSError:
            continue
        count = max(count, text.count('\\"status\\": \\"TERMINATED\\"') + text.count('"status": "TERMINATED"'))
    return count


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(sweep_store, mlflow_uri, tmp_path):
    """Run as a user would: from a folder of their own (not the checkout), relative paths, no
    tracking variable set. Tune trials run in other working directories, so the trials' runs
    land in this folder's workspace only if the driver resolved the location once for all."""
    data, fit = sweep_store
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep_config(
        tmp_path, name="resume-sweep",
        variants={"k3-l0.01": VARIANTS["k3-l0.01"], "k2-l0.1": {"k_lip": 2, "sync_weight": 0.1}},
        scheduler={"type": "none"}, champion={"enabled": False},
        inference={"guidance": [2.0]}, objective={"split": "val", "max_clips": 1})))  # resuming is the point
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tune.sweep", "--data", os.path.relpath(data, tmp_path),
               "--fit", os.path.relpath(fit, tmp_path), "--out", "out", "--config", "sweep.yaml"]
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items()  # the driver starts its own local Ray
           if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "DISENTTALK_HOME")}
    env.update(TUNE_GLOBAL_CHECKPOINT_S="1", PYTHONPATH=str(root))
    log = open(tmp_path / "first.log", "w")
    driver = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    experiment = out / "tune" / "resume-sweep"
    deadline = time.monotonic() + 420
    try:
        while time.monotonic() < deadline and driver.poll() is None and _finished_trials(experiment) < 1:
            time.sleep(0.5)
        assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        assert _finished_trials(experiment) == 1, "no trial finished in time"
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
        driver.wait()
    starts = {p.parent.name: p.read_text().count("\n") for p in (out / "trials").glob("*/starts.log")}
    finished_first = [t for t in starts if (out / "trials" / t / "bundle" / "meta.json").exists()
                      and "sweep" in json.loads((out / "trials" / t / "bundle" / "meta.json").read_text())]
    assert len(finished_first) == 1, starts
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming" in second.stdout
    after = {p.parent.name: p.read_text().count("\n") for p in (out / "trials").glob("*/starts.log")}
    table = json.loads((out / "outcome.json").read_text())["outcome"]
    assert table["completed"] == 2
    for t in finished_first:  # finished before the kill: not started again
        assert after[t] == starts[t] == 1
    assert len(after) == 2 and sum(after.values()) <= sum(starts.values()) + 2
    from disenttalk.bundle import load_bundle  # each trial trained with its own K_lip

    k_lips = sorted(len(load_bundle(p.parent).split.lip) for p in (out / "trials").glob("*/bundle/meta.json"))
    assert k_lips == [2, 3]
    _assert_trials_tracked_in(tmp_path / "workspace" / "mlflow.db", table["completed"])


def _assert_trials_tracked_in(db: Path, completed: int) -> None:
    """Every finished trial is a finished nested run in the workspace store of the folder run from."""
    import mlflow

    assert db.is_file(), "the default tracking store is the workspace of the folder the user ran from"
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("sweep-test").experiment_id])
    finished = [r for r in runs if r.data.tags.get("mlflow.parentRunId") and r.info.status == "FINISHED"]
    assert len(finished) >= completed, [(r.info.run_name, r.info.status) for r in runs]
