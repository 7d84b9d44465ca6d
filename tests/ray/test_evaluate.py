"""The evaluate stage on a tiny clip store and a random-weight bundle: tables, baselines, MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.ray

def test_evaluate_writes_tables_baselines_and_mlflow_metrics(ray_cluster, mlflow_uri, eval_store, tiny_bundle,
                                                             tmp_path):
    import mlflow

    from disenttalk.metrics.clip import METRICS
    from workflows.evaluate import run
    from workflows.evaluation import REFERENCES, EvaluateConfig

    root, _ = eval_store
    cfg = EvaluateConfig().with_overrides([
        "steps=2", "cpbd_stride=10", "evaluator.steps=3", "evaluator.batch_size=4",
        "evaluator.sync.embed_dim=8", "evaluator.sync.hidden=16", "mlflow.experiment=evaluate-test",
        "blink_reference=speaker",
    ])
    out = tmp_path / "eval"
    result = run(cfg, str(tiny_bundle), str(root), str(out))
    # the speaker protocol: a clip whose speaker has other footage is told that footage's rate
    told = {c["clip_id"]: c["scores"]["model"].get("told_blink_rate")
            for c in json.loads((out / "clips.json").read_text())}
    assert told["va_a"] is None  # no other clip of this speaker: the corpus rate
    assert told["te_a"] is not None and told["te_a"] >= 0 and told["xl_a"] is not None

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"val", "test", "test/en", "test_xling"}
    for row in metrics.values():
        assert set(row) == {"n_clips", "gap_closed", "gap_closed_decoded", "truth_blinks", "truth_seconds",
                            "truth_blink_rate_low", "truth_blink_rate_high", *METRICS}
        assert row["n_clips"] == 1
        # the truth's blinks pooled over the split and the interval of the rate they measure
        assert row["truth_seconds"] > 0
        assert row["truth_blink_rate_low"] <= row["truth_blinks"] / row["truth_seconds"] <= row["truth_blink_rate_high"]
        assert row["lmd"] >= 0 and 0 <= row["cpbd"] <= 1 and np.isfinite(row["sync_conf"])
    baselines = json.loads((out / "baselines.json").read_text())
    assert set(baselines) == set(REFERENCES)
    assert all(set(b) == set(metrics) for b in baselines.values())
    assert "gap_closed" in (out / "metrics.md").read_text()
    assert baselines["still"]["val"]["landmark_change"] == 0.0
    for split, row in metrics.items():  # one clip a split, no corpus: the truth's tracked blinks
        assert row["truth_blinks"] == pytest.approx(baselines["truth"][split]["blink_rate"] * row["truth_seconds"])
    assert baselines["truth"]["val"]["lmd"] == pytest.approx(0.0, abs=1e-9)
    assert baselines["shifted"]["val"]["lmd"] > 0
    # the oracle (truth's motion through encode → render → re-track) lies between truth and still
    oracle = baselines["oracle"]["val"]
    assert oracle["lmd_decoded"] <= baselines["still"]["val"]["lmd_decoded"] + 1e-6
    assert np.isfinite(oracle["lmd"]) and np.isfinite(metrics["val"]["lmd_decoded"])
    assert (out / "metrics.md").read_text().count("| val |") == 1 + len(REFERENCES)
    assert sorted(p.name for p in (out / "plots").glob("val_*.png")) == [
        "val_change.png", "val_ear.png", "val_mouth.png"]
    assert (out / "evaluator" / "expert.pt").is_file()

    run_data = mlflow.get_run(result["run_id"]).data
    assert run_data.metrics["val/lmd"] == pytest.approx(metrics["val"]["lmd"])
    assert "test/en/sync_conf" in run_data.metrics
    assert "baseline/still/val/landmark_change" in run_data.metrics
