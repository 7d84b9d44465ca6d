"""``preprocess`` on a tiny corpus: bad clips become rejects, re-runs skip, S3 works end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from workflows.platform import clipstore, storage
from workflows.preprocess import run
from workflows.preprocess.worker import PreprocessConfig

pytestmark = pytest.mark.ray


def small_config(**mlflow) -> PreprocessConfig:
    """Two single-CPU actors, progress bars off, tracking as given."""
    return PreprocessConfig.from_dict(
        {
            "ray": {"num_cpus": 2, "progress_bars": False},
            "actors": {"min_size": 1, "max_size": 2, "num_cpus": 1.0},
            "mlflow": {"enabled": bool(mlflow), **mlflow},
        }
    )


@pytest.fixture(scope="module")
def local_store(ray_cluster, mlflow_uri, corpus, tmp_path_factory):
    """The corpus preprocessed once into a local store: (store path, first summary)."""
    out = str(tmp_path_factory.mktemp("store"))
    summary = run(str(corpus / "manifest.jsonl"), out, small_config(experiment="pre-test"))
    return out, summary


def test_bad_clips_are_rejected_with_reasons(local_store):
    out, summary = local_store
    assert summary["ok"] == 2 and summary["rejected"] == 3
    reasons = {r["clip_id"]: r["reason"] for r in clipstore.read_rejects(out)}
    assert reasons == {"corrupt": "unreadable", "noface": "no_face", "silent": "silent"}
    jsonl = [json.loads(x) for x in storage.read_text(storage.join(out, "rejects.jsonl")).splitlines()]
    assert {r["clip_id"]: r["reason"] for r in jsonl} == reasons
    assert summary["rejected_by_reason"] == {"no_face": 1, "silent": 1, "unreadable": 1}


def test_records_follow_the_contract(local_store, corpus):
    out, _ = local_store
    index = {r["clip_id"]: r for r in clipstore.read_index(out)}
    assert set(index) == {"good_a", "good_b"}
    row = index["good_b"]
    assert (row["speaker"], row["language"], row["split"]) == ("spk2", "zh", "train")
    rec = clipstore.read_record(out, row)
    t = rec.num_frames
    assert t == row["num_frames"] == 30 and rec.fps == pytest.approx(25.0)
    assert rec.landmarks.shape == (t, 478, 3) and rec.valid.shape == (t,)
    assert rec.valid.mean() > 0.9 and np.isfinite(rec.landmarks[rec.valid]).all()
    assert rec.features.shape[0] == t and rec.features.shape[1] == row["feature_dim"] > 0
    assert np.isfinite(rec.features).all()
    # landmarks live in the 256² aligned crop; the crop boxes come along to map them back
    pts = rec.landmarks[rec.valid]
    assert pts[..., :2].min() > -32 and pts[..., :2].max() < 256 + 32
    assert rec.extra["crop_centres"].shape == (t, 2) and rec.extra["crop_sides"].shape == (t,)
    assert clipstore.read_framing(out) == {"crop_size": 256, "crop_margin": 0.3}  # for the bundle
    assert len(rec.audio) == round(t / rec.fps * rec.sample_rate)
    import hashlib

    expected = hashlib.sha256((corpus / "clips/good_b.mp4").read_bytes()).hexdigest()
    assert rec.content_hash == row["content_hash"] == expected


def test_rerun_skips_done_hashes(local_store, corpus):
    out, _ = local_store
    before = {f: storage.read_bytes(f) for f in storage.list_files(out, ".npz")}
    again = run(str(corpus / "manifest.jsonl"), out, small_config())
    assert again["skipped"] == 5  # every file was read and hashed before, rejects included
    assert again["ok"] == 0 and again["store_clips"] == 2
    assert {r["clip_id"] for r in clipstore.read_index(out)} == {"good_a", "good_b"}
    assert {r["clip_id"] for r in clipstore.read_rejects(out)} == {"corrupt", "noface", "silent"}
    assert {f: storage.read_bytes(f) for f in storage.list_files(out, ".npz")} == before


def test_rejects_are_retried_when_the_settings_change(local_store, corpus):
    out, _ = local_store
    changed = small_config().model_copy(update={"filters": small_config().filters.model_copy(
        update={"min_audio_rms": 1e-5})})
    again = run(str(corpus / "manifest.jsonl"), out, changed)
    assert again["skipped"] == 2  # the good clips; the three rejects were tried again ...
    assert again["rejected"] == 3 and {r["clip_id"] for r in clipstore.read_index(out)} == {"good_a", "good_b"}
    rejects = clipstore.read_rejects(out)
    assert len(rejects) == 3 and len({r["fingerprint"] for r in rejects}) == 1  # ... under the new settings
    assert run(str(corpus / "manifest.jsonl"), out, changed)["skipped"] == 5  # and not again


def test_preprocess_logs_to_mlflow(local_store, mlflow_uri):
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["pre-test"], output_format="list")
    assert len(runs) == 1
    assert runs[0].data.metrics["ok"] == 2 and runs[0].data.metrics["rejected.no_face"] == 1
    assert runs[0].data.params["filters.max_no_face_fraction"] == "0.2"


def test_manifest_and_store_on_s3(ray_cluster, s3_endpoint, corpus):
    storage.ensure_bucket("s3://corpus")
    storage.upload_dir(corpus, "s3://corpus/demo")
    out = "s3://corpus/store"
    summary = run("s3://corpus/demo/manifest.jsonl", out, small_config())
    assert summary["ok"] == 2 and summary["rejected"] == 3
    index = clipstore.read_index(out)
    assert {r["clip_id"] for r in index} == {"good_a", "good_b"}
    assert all(r["source_uri"].startswith("s3://corpus/demo/clips/") for r in index)
    assert clipstore.read_record(out, index[0]).landmarks.shape[1:] == (478, 3)
    assert len(storage.list_files(storage.join(out, "clips"), ".npz")) == 2
