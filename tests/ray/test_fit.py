"""``fit`` on a store of clips with known mouth and eye motion: model, regions, report, MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workflows.fit import FitConfig, read_expression, read_morphable, read_split, run
from workflows.platform import clipstore, storage

pytestmark = pytest.mark.ray

T = 60


def mouth_and_eyes(t: int, phase: float) -> tuple[np.ndarray, np.ndarray]:
    """Independent per-frame mouth opening and eye closing in [0, 1] (speech-like and blinks)."""
    frames = np.arange(t)
    mouth = 0.5 + 0.5 * np.sin(2 * np.pi * frames / 11.0 + phase)
    eyes = np.exp(-0.5 * ((frames % 23 - 11 - 3 * phase) / 1.5) ** 2)  # one blink per 23 frames
    return mouth, eyes


@pytest.fixture(scope="module")
def motion_store(tmp_path_factory, astronaut):
    """A store whose clips are the astronaut's tracked face with synthetic mouth/eye motion."""
    from disenttalk.face.editors import close_eyes, close_lips, open_mouth
    from disenttalk.face.tracker import FaceTracker

    with FaceTracker() as tracker:
        base = tracker.track_image(np.ascontiguousarray(astronaut[0:300, 100:400]))
    assert base is not None
    root = str(tmp_path_factory.mktemp("motion_store"))
    rng = np.random.default_rng(7)
    rows, truth = [], {}
    for k, split in enumerate(["train", "train", "train", "test"]):
        mouth, eyes = mouth_and_eyes(T, phase=0.7 * k)
        # Mouth motion as the lip editor undoes it: an open mouth closed by 1 - mouth(t), so the
        # editor's Δ (Eq. 1) lies in the span of the data rather than in noise dimensions.
        wide_open = open_mouth(base.astype(np.float64), 0.15)
        lm = np.stack([close_eyes(close_lips(wide_open, 1.0 - m), e) for m, e in zip(mouth, eyes, strict=True)])
        lm = lm * (1.0 + 0.02 * k) + rng.normal(0.0, 0.3, lm.shape)  # identity scale + noise
        valid = np.ones(T, bool)
        valid[5] = False  # one lost frame per clip
        lm[5] = np.nan
        rec = clipstore.ClipRecord(
            clip_id=f"c{k}", speaker=f"s{k}", language="en", split=split, fps=25.0,
            landmarks=lm.astype(np.float32), valid=valid, audio=np.zeros(T * 640, np.float32),
            sample_rate=16000, features=np.zeros((T, 4), np.float32), source_uri=f"mem://c{k}",
            content_hash=f"{k:064x}",
        )  # fmt: skip
        rows.append(rec.index_row(clipstore.write_record(root, rec)))
        truth[rec.clip_id] = (mouth, eyes)
    clipstore.write_table(storage.join(root, clipstore.INDEX), rows, clipstore.INDEX_SCHEMA)
    return root, truth


@pytest.fixture(scope="module")
def fitted(motion_store, mlflow_uri, tmp_path_factory):
    data, _ = motion_store
    out = str(tmp_path_factory.mktemp("fit"))
    cfg = FitConfig.from_dict(
        {"n_expression": 16, "k_lip": 3, "k_eye": 2, "mlflow": {"experiment": "fit-test"}}
    )
    return out, run(data, out, cfg)


def test_fit_writes_model_regions_and_report(fitted):
    out, summary = fitted
    model, split = read_morphable(out), read_split(out)
    assert model.n_expression == split.num_dims == 16
    assert (len(split.lip), len(split.eye)) == (3, 2)
    report = json.loads(storage.read_text(storage.join(out, "region_scores.json")))
    assert report["lip"]["chosen"] == list(split.lip) and len(report["eye"]["scores"]) == 16
    assert storage.read_bytes(storage.join(out, "region_scores.png"))[:4] == b"\x89PNG"
    assert summary["train_clips"] == 3 and summary["train_frames"] == 3 * (T - 1)
    assert summary["recon_nme_train"] < 0.01  # synthetic motion is low-rank: near exact


def test_regions_capture_the_mouth_and_the_eyes(fitted, motion_store):
    out, _ = fitted
    data, truth = motion_store
    split = read_split(out)
    row = next(r for r in clipstore.read_index(data) if r["split"] == "test")
    expression, pose, _ = read_expression(out, row)
    assert expression.shape == (T, 16) and pose.shape == (T, 6)
    assert np.isnan(expression[5]).all() and np.isfinite(np.delete(expression, 5, 0)).all()
    mouth, eyes = (np.delete(x, 5) for x in truth[row["clip_id"]])
    e = np.delete(expression, 5, 0)

    def best_corr(dims, signal):
        return max(abs(np.corrcoef(e[:, d], signal)[0, 1]) for d in dims)

    assert best_corr(split.lip, mouth) > 0.9
    assert best_corr(split.eye, eyes) > 0.9


def test_fit_is_logged_to_mlflow(fitted, mlflow_uri):
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    (run_info,) = mlflow.search_runs(experiment_names=["fit-test"], output_format="list")
    assert run_info.data.params["k_lip"] == "3" and run_info.data.params["n_expression"] == "16"
    assert run_info.data.metrics["recon_nme_train"] == pytest.approx(fitted[1]["recon_nme_train"])
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(run_info.info.run_id)}
    assert {"region_scores.png", "morphable.npz", "regions.json", "region_scores.json"} <= names
