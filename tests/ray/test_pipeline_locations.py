"""The pipeline as a user runs it: from a folder of their own (not the checkout), with relative
paths and no tracking or workspace variable set. Locations are resolved once, in the driver:
the Ray Data actors, the Ray Train workers and the registry all use that folder's workspace
(each runs in a working directory of Ray's, so a default computed there would be another
database). The sweep's trials are checked the same way in tests/ray/test_sweep.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.corpus import write_corpus

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["train.sync_steps=2", "train.denoiser_steps=3", "train.window=16", "train.batch_size=2",
         "train.max_prefix=4", "run.checkpoint_every=3", "run.val_batches=1", "run.num_to_keep=1",
         "scaling.num_workers=1", "model.denoiser.dim=16", "model.denoiser.num_blocks=1",
         "model.denoiser.heads=2", "model.diffusion.num_timesteps=50", "model.audio.n_mels=8",
         "model.sync.embed_dim=8", "model.sync.hidden=16", "model.sync.windows_per_clip=2",
         "model.sync.neg_min_shift=2", "model.sync.neg_max_shift=4"]
SETS = [("--set-preprocess", "ray.progress_bars=false"), ("--set-preprocess", "audio.n_mels=8"),
        ("--set-fit", "n_expression=8"), ("--set-fit", "k_lip=3"), ("--set-fit", "k_eye=2"),
        ("--set-fit", "region_score=none"), *(("--set-train", s) for s in TRAIN)]


def test_pipeline_tracks_into_the_workspace_of_the_folder_it_runs_from(tmp_path, astronaut):
    import mlflow

    write_corpus(tmp_path / "corpus", astronaut, {"train": 2, "val": 1}, seconds=2.0)
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "DISENTTALK_HOME", "RAY_ADDRESS") and not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "workflows.cli", "pipeline", "--manifest", "corpus/manifest.jsonl",
         "--root", "run", "--stages", "preprocess,fit,train,register", *[a for pair in SETS for a in pair]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    report = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [s for s in ("preprocess", "fit", "train", "register") if s not in json.dumps(report)] == []
    db = tmp_path / "workspace" / "mlflow.db"
    assert db.is_file(), "the default tracking store is the workspace of the folder the user ran from"
    client = mlflow.MlflowClient(f"sqlite:///{db}")
    assert client.search_model_versions("name='disenttalk'"), "the pipeline registered its model there"
    train = client.get_experiment_by_name("disenttalk-train")
    runs = client.search_runs([train.experiment_id])
    assert runs and any(k.startswith("val_") or "loss" in k for r in runs for k in r.data.metrics), \
        "the Ray Train workers' metrics reached the same store"
