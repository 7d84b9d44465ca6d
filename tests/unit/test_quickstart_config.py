"""configs/quickstart.yaml: every stage override it carries is valid for that stage's config."""

from __future__ import annotations


def test_quickstart_overrides_apply_to_every_stage():
    from workflows import evaluate, fit, train
    from workflows.clipworker import PreprocessConfig
    from workflows.common import load_config
    from workflows.quickstart import QuickstartConfig

    cfg = load_config(QuickstartConfig, "quickstart", None, [])
    o = cfg.overrides
    load_config(PreprocessConfig, "preprocess", None, o.preprocess)
    load_config(fit.FitConfig, "fit", None, o.fit)
    stage = train.load_stage_config(None, o.train)
    steps = [s for s in o.train if s.startswith("train.denoiser_steps=")]
    assert steps and stage.train.denoiser_steps == int(steps[0].split("=")[1])  # overrides took effect
    ev = load_config(evaluate.EvaluateConfig, "evaluate", None, o.evaluate)
    assert ev.max_clips_per_split > 0 and cfg.champion_metric.split("/")[-1] == "lmd"
