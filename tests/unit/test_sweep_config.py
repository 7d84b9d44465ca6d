"""Sweep settings without Ray: region re-selection from stored scores, the one-region split, K
checks, the search space, train overrides, the objective's ranking, the presets' configs."""

from __future__ import annotations

import math

import pytest

from disenttalk.config import ConfigError
from disenttalk.face.regions import RegionSplit, check_sizes, split_by_scores
from tune.config import SweepConfig
from tune.scoring import feasible, rank_key
from tune.space import inference_grid, points, trial_id, trial_split
from tune.training import check_train_keys, train_values, trial_stage_config, with_values
from workflows.common import default_config_path, load_config

SCORES = {"lip": (0.9, 0.8, 0.1, 0.7, 0.05, 0.0), "eye": (0.1, 0.6, 0.5, 0.0, 0.4, 0.3)}


def test_reselect_takes_each_regions_top_dims_from_the_stored_scores():
    fitted = split_by_scores(SCORES, k_lip=2, k_eye=2)
    assert (fitted.lip, fitted.eye, fitted.global_) == ((0, 1), (2, 4), (3, 5))
    wider = fitted.reselect(3, 1)
    assert (wider.lip, wider.eye, wider.global_) == ((0, 1, 3), (2,), (4, 5))
    # dim 1 scores 0.8 for lip and 0.6 for eye: with K_lip = 1 the lip keeps dim 0 and the eye gets dim 1
    narrow = fitted.reselect(1, 2)
    assert (narrow.lip, narrow.eye) == ((0,), (1, 2))
    assert narrow.scores == fitted.scores  # the scores travel with the split


def test_a_split_without_scores_cannot_be_reselected():
    with pytest.raises(ValueError, match="no per-dim scores"):
        RegionSplit.contiguous(6, 2, 2).reselect(2, 2)


def test_single_region_holds_every_dim():
    single = RegionSplit.single(5)
    assert single.lip == (0, 1, 2, 3, 4) and single.eye == () and single.global_ == ()


@pytest.mark.parametrize(("k_lip", "k_eye", "message"), [
    (5, 2, r"K_lip \+ K_eye = 5 \+ 2 = 7 exceeds the 6 expression dims"),
    (0, 2, "each region needs at least one dim"),
    (2, 0, "each region needs at least one dim"),
])
def test_k_checks_say_what_is_wrong(k_lip, k_eye, message):
    with pytest.raises(ValueError, match=message):
        check_sizes(6, k_lip, k_eye)


def test_trial_split_and_train_keys_follow_the_trial_params():
    fitted = split_by_scores(SCORES, k_lip=2, k_eye=2)
    assert trial_split(fitted, {}) is fitted
    assert trial_split(fitted, {"k_lip": 3}).lip == (0, 1, 3)
    assert trial_split(fitted, {"regions": "single"}).eye == ()
    assert train_values({"k_lip": 3, "sync_weight": 0.1, "train.lr": 1e-4, "guidance": 2.0}) == {
        "train.sync_weight": 0.1, "train.lr": 1e-4}


def test_a_trials_train_config_is_the_base_with_its_keys_and_the_sweeps_settings():
    from workflows.train import TrainStageConfig

    base = TrainStageConfig().model_copy(update={"run": TrainStageConfig().run.model_copy(update={"log_every": 7})})
    cfg = SweepConfig.from_dict({"variants": {"a": {}}, "trial": {"num_workers": 3, "cpus_per_worker": 0.5},
                                 "mlflow": {"experiment": "exp"}})
    stage = trial_stage_config(base, cfg, {"k_lip": 3, "sync_weight": 0.25, "model.denoiser.dim": 24},
                               label="a", run_name="t-1", storage_path="/abs/t-1/ray", parent_run_id="p")
    assert stage.train.sync_weight == 0.25 and stage.model.denoiser.dim == 24
    assert (stage.scaling.num_workers, stage.scaling.cpus_per_worker, stage.scaling.use_gpu) == (3, 0.5, False)
    assert (stage.run.name, stage.run.storage_path, stage.run.log_every) == ("t-1", "/abs/t-1/ray", 7)
    assert (stage.mlflow.experiment, stage.mlflow.run_name, stage.mlflow.parent_run_id) == ("exp", "a", "p")
    assert not stage.ray.progress_bars
    assert TrainStageConfig.from_json(stage.to_json()) == stage  # a valid config, as if loaded


def test_unknown_or_mistyped_train_keys_are_refused():
    from workflows.train import TrainStageConfig

    base = TrainStageConfig()
    with pytest.raises(ConfigError, match="no key 'nope'"):
        with_values(base, {"train.nope": 1})
    with pytest.raises(ConfigError, match="invalid"):
        with_values(base, {"train.lr": "fast"})
    with pytest.raises(ConfigError, match="no key 'lr'"):
        check_train_keys(SweepConfig.from_dict({"space": {"lr": {"grid": [0.1]}}}), base)


def test_trial_ids_are_stable_and_distinct():
    assert trial_id({"k_lip": 3, "sync_weight": 0.1}) == trial_id({"sync_weight": 0.1, "k_lip": 3})
    assert trial_id({"k_lip": 3}) != trial_id({"k_lip": 4})


def test_config_refuses_unclear_spaces():
    with pytest.raises(ValueError, match="exactly one of"):
        SweepConfig.from_dict({"space": {"k_lip": {"grid": [9], "choice": [13]}}})
    with pytest.raises(ValueError, match="nothing to search"):
        SweepConfig.from_dict({})
    with pytest.raises(ValueError, match="searched at inference"):
        SweepConfig.from_dict({"space": {"guidance": {"grid": [1.0]}}})
    with pytest.raises(ValueError, match="either a search space or named variants"):
        SweepConfig.from_dict({"space": {"k_lip": {"grid": [9]}}, "variants": {"a": {}}})


def test_points_enumerate_region_sizes():
    cfg = SweepConfig.from_dict({"space": {"k_lip": {"grid": [9, 13]}, "k_eye": {"randint": [6, 7]},
                                           "train.lr": {"loguniform": [1e-4, 1e-3]}}})
    assert points(cfg) == [{"k_lip": 9, "k_eye": 6}, {"k_lip": 9, "k_eye": 7},
                           {"k_lip": 13, "k_eye": 6}, {"k_lip": 13, "k_eye": 7}]
    with pytest.raises(ValueError, match="integer values"):
        points(SweepConfig.from_dict({"space": {"k_lip": {"uniform": [9, 13]}}}))


def test_the_objective_ranks_feasible_settings_first_then_by_lmd():
    objective = SweepConfig.from_dict({"variants": {"a": {}}}).objective
    good = {"lmd": 0.020, "blink_error": 0.1, "sync_ratio": 0.9}
    better_but_no_blinks = {"lmd": 0.015, "blink_error": 1.0, "sync_ratio": 0.9}
    better_out_of_sync = {"lmd": 0.016, "blink_error": 0.1, "sync_ratio": 0.2}
    unknown_blinks = {"lmd": 0.018, "blink_error": math.nan, "sync_ratio": 0.9}
    assert feasible(good, objective) and feasible(unknown_blinks, objective)
    assert not feasible(better_but_no_blinks, objective) and not feasible(better_out_of_sync, objective)
    ranked = sorted([good, better_but_no_blinks, better_out_of_sync, unknown_blinks],
                    key=lambda s: rank_key(s, objective))
    assert ranked[:2] == [unknown_blinks, good]


def test_inference_grid_is_the_product():
    assert inference_grid({"guidance": [1.0, 2.0], "eta": [0.4]}) == [
        {"guidance": 1.0, "eta": 0.4}, {"guidance": 2.0, "eta": 0.4}]


@pytest.mark.parametrize("name", ["sweep", "sweep_demo", "sweep_ablation"])
def test_shipped_configs_load(name):
    cfg = load_config(SweepConfig, "sweep", default_config_path(name), [])
    assert cfg.space or cfg.variants
    if name == "sweep_ablation":
        assert set(cfg.variants) == {"full", "no_sync_loss", "no_regions"}
        assert cfg.report.inference_variants["no_cfg"].guidance == 1.0


def test_a_one_region_model_trains():
    """The ablation without disentanglement: every dim in one region, no eye dims."""
    import torch

    from disenttalk.model.config import DenoiserConfig, ModelConfig
    from disenttalk.model.denoiser import Denoiser
    from disenttalk.model.diffusion import DiffusionConfig, GaussianDiffusion
    from disenttalk.model.sync import SyncExpert
    from disenttalk.model.train import denoiser_train_step
    from workflows.train.data import blink_model

    split = RegionSplit.single(8)
    cfg = ModelConfig(denoiser=DenoiserConfig(dim=16, num_blocks=1, heads=2), n_expression=8, k_lip=8, k_eye=0)
    torch.manual_seed(0)
    denoiser = Denoiser(cfg.denoiser, split, 20)
    diffusion = GaussianDiffusion(DiffusionConfig(num_timesteps=50), split)
    batch = {"expression": torch.randn(2, 16, 8), "audio": torch.randn(2, 16, 20)}
    out = denoiser_train_step(denoiser, diffusion, batch, torch.optim.Adam(denoiser.parameters()), split=split,
                              expert=SyncExpert(cfg.sync, audio_dim=20, lip_dim=8),
                              generator=torch.Generator().manual_seed(0))
    assert all(math.isfinite(v) for v in out.values()) and out["sync_loss"] > 0
    assert blink_model([], [], None) is None  # no eye dims: no blinks to carry
