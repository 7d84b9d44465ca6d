"""tune-sampler: Ray Tune grids over (guidance, lip η), then eye η, on a tiny store write the winner into the bundle."""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = pytest.mark.ray


def test_tune_sampler_writes_the_chosen_setting_into_meta(ray_cluster, mlflow_uri, eval_store, tiny_bundle,
                                                          tmp_path):
    import mlflow

    from tune.sampler import SamplerSearchConfig, run

    root, _ = eval_store
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    cfg = SamplerSearchConfig().with_overrides([
        "split=val", "eye_etas=[0.0,1.0]", "lip_etas=[0.5]", "guidances=[1.0,2.0]", "seeds=[0]", "steps=2",
        "mlflow.experiment=tune-sampler-test", f"storage_path={tmp_path / 'ray_results'}"])
    result = run(cfg, str(bundle), str(root))

    table = result["results"]
    lips = [r for r in table if r["stage"] == "lips"]
    eyes = [r for r in table if r["stage"] == "eyes"]
    # lips: every guidance at the middle eye η; eyes: the other eye η at the lips' winner
    assert sorted((r["guidance"], r["eye_eta"]) for r in lips) == [(1.0, 1.0), (2.0, 1.0)]
    lip = min(lips, key=lambda r: r["lmd"])
    assert [(r["guidance"], r["eye_eta"]) for r in eyes] == [(lip["guidance"], 0.0)]
    meta = json.loads((bundle / "meta.json").read_text())
    best = result["best"]
    assert best["guidance"] == lip["guidance"]  # guidance chosen on lip error alone
    assert (meta["guidance"], meta["eta"]["eye"]) == (best["guidance"], best["eye_eta"])
    assert meta["eta"]["lip"] == meta["eta"]["global"] == 0.5
    assert meta["sampler_search"]["split"] == "val" and len(meta["sampler_search"]["results"]) == 3
    assert "has_morphable" in meta  # the rest of meta.json is kept

    from disenttalk.generate.generator import Generator

    gen = Generator.from_bundle(bundle)  # the bundle still loads and now defaults to the winner
    assert (gen.default_guidance, gen.default_eta) == (meta["guidance"], meta["eta"])
    eta = gen.eta_vector(gen.default_eta)  # one η per dim, by region
    assert eta.shape == (gen.split.num_dims,) and set(eta[list(gen.split.eye)]) == {best["eye_eta"]}
    with pytest.raises(ValueError, match="needs exactly the keys"):
        gen.eta_vector({"lip": 0.5})
    assert "best/lmd" in mlflow.get_run(result["run_id"]).data.metrics


def test_tune_sampler_refuses_what_it_cannot_edit(tmp_path, eval_store):
    import typer

    from tune.sampler import SamplerSearchConfig, run

    root, _ = eval_store
    with pytest.raises(typer.BadParameter, match="not a local bundle folder"):
        run(SamplerSearchConfig(), str(tmp_path / "nothing"), str(root))
