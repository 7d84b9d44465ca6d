"""configs/quickstart*.yaml: every stage override a preset carries is valid for that stage's config."""

from __future__ import annotations

import pytest

PRESETS = ("demo", "long")


@pytest.mark.parametrize("preset", PRESETS)
def test_quickstart_overrides_apply_to_every_stage(preset):
    from tune import sampler as tune_sampler
    from workflows import evaluate, fit, train
    from workflows.common import load_config
    from workflows.preprocess.worker import PreprocessConfig
    from workflows.quickstart import QuickstartConfig, preset_path

    cfg = load_config(QuickstartConfig, "quickstart", preset_path(preset), [])
    o = cfg.overrides
    load_config(PreprocessConfig, "preprocess", None, o.preprocess)
    load_config(fit.FitConfig, "fit", None, o.fit)
    stage = train.load_stage_config(None, o.train)
    steps = [s for s in o.train if s.startswith("train.denoiser_steps=")]
    assert steps and stage.train.denoiser_steps == int(steps[0].split("=")[1])  # overrides took effect
    load_config(tune_sampler.SamplerSearchConfig, "tune_sampler", None, o.tune_sampler)
    ev = load_config(evaluate.EvaluateConfig, "evaluate", None, o.evaluate)
    assert ev.max_clips_per_split > 0 and cfg.champion_metric.split("/")[-1] == "lmd"


def test_unknown_preset_is_refused_with_the_known_ones():
    import typer

    from workflows.quickstart import preset_path

    with pytest.raises(typer.BadParameter, match="known: demo, long"):
        preset_path("huge")


def test_headline_puts_the_truths_blink_interval_beside_the_models_rate():
    from workflows.quickstart import _headline

    row = {"lmd": 0.013, "gap_closed": 0.7, "blink_rate": 0.32, "blink_duration": 0.2,
           "landmark_change": 0.006, "sync_conf": 0.4, "truth_blinks": 8.0, "truth_seconds": 34.0,
           "truth_blink_rate_low": 0.1016, "truth_blink_rate_high": 0.4636}
    text = _headline({"metrics": {"test/en": row}, "baselines": {"still": {"test/en": {"lmd": 0.023}}}})
    assert "test/en        8 in  34.0 s → 0.10–0.46 /s (model 0.32)" in text
    assert text.splitlines()[2].startswith("test/en     still")  # the table itself is unchanged
