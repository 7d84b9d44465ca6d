"""``disenttalk tune-sampler``: choose a trained bundle's sampler settings (DDIM η, guidance) on val.

What η moves most is blinking: eye dims are not driven by the audio, so how often they dip far
enough to read as a blink depends on how much noise the sampler re-injects (η = 0 keeps the
jitter that crosses the blink threshold, η = 1 smooths it away), and the right value differs
from one trained model to the next. Lips go the other way: more re-injected noise gives lower
lip error. DDIM updates every dim on its own, so the eye dims get their own η (``eye_etas``)
and the lip and global dims theirs (``lip_etas``). Guidance (Eq. 9) moves the lips too: a
long-preset model closed more of the decoded-lip gap on test at guidance 1–1.5 than at 2.

The search runs in two Ray Tune grids, one trial per setting; each trial generates motion for
the split's clips (several seeds), renders it onto the reference image ``evaluate`` would use
(the speaker's photo named by the corpus manifest, else the clip's first frame), re-tracks the
video and measures, as ``evaluate`` does,

- ``lmd``: mouth landmark distance of the re-tracked landmarks to the tracked truth, and
- ``blink_error``: |blinks / the truth's blinks − 1| (the truth: the clip's tracked landmarks;
  blinks per second themselves where the truth has none).

1. *lips*: every (guidance, lip η) at one eye η (the middle of ``eye_etas``); the least ``lmd``
   wins. Skipped when there is only one such pair.
2. *eyes*: every eye η at the winning (guidance, lip η). Among the settings whose ``lmd`` is
   within ``lmd_tolerance`` of the best one, the one with the smallest blink error wins.

The lips are thus chosen on lip error alone and the eyes on blink rate, and the grid costs
(guidances × lip η) + eye η trials rather than their product. The winner is written into the
bundle's ``meta.json`` (``eta`` by region, ``guidance`` and every trial as ``sampler_search``),
which :class:`Generator` uses as its defaults. The search is logged to MLflow. Scoring decoded
landmarks without rendering would be cheaper but misleads: the renderer paints a partly lowered
lid as closing, so small eye-dim jitter that never reaches the blink threshold in landmarks
does after rendering.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import typer
from pydantic import Field

from disenttalk.bundle import META
from disenttalk.config import StrictConfig
from disenttalk.constants import DEFAULT_STEPS
from workflows.common import user_errors
from workflows.platform import clipstore, storage
from workflows.platform.raycluster import RayConfig
from workflows.platform.tracking import MlflowConfig


class SamplerSearchConfig(StrictConfig):
    """The grid, the clips it is scored on, and how the winner is picked."""

    split: str = "val"
    max_clips: int = Field(12, gt=0)
    eye_etas: tuple[float, ...] = Field((0.0, 0.25, 0.5, 0.75, 1.0), min_length=1)  # η of the eye dims
    lip_etas: tuple[float, ...] = Field((0.8,), min_length=1)  # DDIM η of the lip and global dims
    guidances: tuple[float, ...] = Field((1.0, 1.5, 2.0), min_length=1)  # guidance scale (Eq. 9)
    seeds: tuple[int, ...] = (0, 1)  # more seeds: more blinks counted, less noise per setting
    steps: int = Field(DEFAULT_STEPS, gt=0)  # DDIM steps, as generation uses
    spacing: Literal["uniform", "quadratic"] = "quadratic"  # DDIM timesteps, as generation uses
    reference: Literal["auto", "portrait", "first_frame"] = "auto"  # as in evaluate
    lmd_tolerance: float = Field(0.05, ge=0)  # settings within this fraction of the best lmd compete
    storage_path: str | None = None  # Ray Tune results (local or s3://); None = <workspace>/ray_results
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")  # the generator's: CUDA when the trial has a GPU
    ray: RayConfig = RayConfig()
    mlflow: MlflowConfig = MlflowConfig()


SETTING = ("guidance", "lip_eta", "eye_eta")
SCORES = ("blink_rate", "truth_blink_rate", "blink_error", "lmd")


def best_lips(rows: list[dict[str, float]]) -> dict[str, float]:
    """The lips grid's winner: least finite ``lmd`` (blinks play no part)."""
    scored = [r for r in rows if math.isfinite(r["lmd"])]
    if not scored:
        raise ValueError("no guidance / lip η setting produced a finite lip error")
    return min(scored, key=lambda r: r["lmd"])


def choose(rows: list[dict[str, float]], lmd_tolerance: float) -> dict[str, float]:
    """The winning row: least ``blink_error`` among rows with ``lmd`` ≤ best·(1 + tolerance)."""
    scored = [r for r in rows if math.isfinite(r["lmd"]) and math.isfinite(r["blink_error"])]
    if not scored:
        raise ValueError("no sampler setting produced finite scores")
    best = min(r["lmd"] for r in scored)
    pool = [r for r in scored if r["lmd"] <= best * (1.0 + lmd_tolerance)]
    return min(pool, key=lambda r: (r["blink_error"], r["lmd"]))


class Setting(StrictConfig):
    """One grid point: the guidance scale and the DDIM η of the lip (and global) dims and of the eye dims."""

    guidance: float
    lip_eta: float
    eye_eta: float

    def eta(self) -> dict[str, float]:
        """The per-region DDIM η (lip η for the lip and global dims)."""
        return region_eta(self.model_dump())


class SearchInputs(StrictConfig):
    """What every trial of a search shares, resolved in the driver: absolute locations, the
    clips, their corpus info, and the sampler and scoring settings."""

    bundle: str  # absolute path of the bundle folder
    data: str  # the clip store: absolute path or s3://
    rows: list[dict[str, Any]]
    info: dict[str, dict[str, Any]]  # per clip id, as workflows.evaluation.corpus_info
    seeds: tuple[int, ...]
    steps: int
    spacing: Literal["uniform", "quadratic"]
    reference: Literal["auto", "portrait", "first_frame"]
    threads: int
    device: str


def region_eta(row: dict[str, Any]) -> dict[str, float]:
    """The per-region DDIM η of a grid point (lip η for the lip and global dims)."""
    return {"lip": float(row["lip_eta"]), "eye": float(row["eye_eta"]), "global": float(row["lip_eta"])}


def clip_reference(inputs: SearchInputs, rec: Any) -> tuple[np.ndarray, np.ndarray]:
    """(image, landmarks) a clip's motion is rendered onto, chosen as ``evaluate`` chooses it."""
    from disenttalk import media
    from workflows.evaluation import EvaluateConfig, tracked_reference

    info = inputs.info.get(rec.clip_id, {})
    first = None
    if inputs.reference == "first_frame" or not info.get("portrait"):
        with storage.local_copy(rec.source_uri) as path:
            first = media.read_video(path, with_audio=False).frames[0]
    _, image, image_lm = tracked_reference(EvaluateConfig(reference=inputs.reference), rec.clip_id, info, first,
                                           rec.landmarks[0] if rec.valid[0] else None)
    return image, image_lm


def score_setting(setting: Setting, inputs: SearchInputs) -> dict[str, float]:
    """One trial: generate, render and re-track every clip × seed at one grid point; blink error, lmd."""
    import torch

    from disenttalk.face.tracker import FaceTracker
    from disenttalk.generate.generator import Generator
    from disenttalk.metrics import landmarks as lm_metrics
    from workflows.evaluation import clip_seed

    torch.set_num_threads(max(1, inputs.threads))
    gen = Generator.from_bundle(inputs.bundle, device=inputs.device)
    blinks = truth_blinks = seconds = 0.0
    lmds = []
    for row in inputs.rows:
        rec = clipstore.read_record(inputs.data, row)
        truth = rec.landmarks
        t, fps = len(truth), float(rec.fps)
        audio = rec.audio[: int(round(t / fps * rec.sample_rate))]
        image, image_lm = clip_reference(inputs, rec)
        truth_rate = inputs.info.get(rec.clip_id, {}).get("blink_rate", lm_metrics.landmark_blink_rate(truth, fps))
        for seed in inputs.seeds:
            motion = gen.motion(audio, rec.sample_rate, steps=inputs.steps, sampler="ddim", spacing=inputs.spacing,
                                seed=clip_seed(seed, rec.clip_id), eta=setting.eta(), guidance=setting.guidance)
            tracked = FaceTracker().track(gen.render(motion, image, image_lm)[:t]).landmarks
            blinks += lm_metrics.landmark_blink_rate(tracked, fps) * t / fps
            truth_blinks += truth_rate * t / fps
            seconds += t / fps
            lmds.append(lm_metrics.lmd(tracked, truth))
    error = abs(blinks / truth_blinks - 1.0) if truth_blinks else blinks / seconds
    return {"blink_rate": blinks / seconds, "truth_blink_rate": truth_blinks / seconds,
            "blink_error": error, "lmd": float(np.nanmean(lmds)), "seconds": seconds}


def _trial(config: dict[str, Any], inputs: SearchInputs) -> None:
    from ray import tune

    tune.report(score_setting(Setting(**{k: float(config[k]) for k in SETTING}), inputs))


def search_inputs(cfg: SamplerSearchConfig, bundle: str, data: str, corpus: str | None) -> SearchInputs:
    """The trials' shared inputs: the split's first ``max_clips`` clips by id, their corpus info,
    locations made absolute here (trials run in their own working directories)."""
    from workflows.evaluation import corpus_info

    folder = Path(bundle)
    if not (folder / META).is_file():
        raise typer.BadParameter(f"{bundle}: not a local bundle folder (tune-sampler edits its meta.json)")
    data = storage.absolute(data)
    rows = sorted(clipstore.read_index(data, cfg.split), key=lambda r: r["clip_id"])[: cfg.max_clips]
    if not rows:
        raise ValueError(f"{data}: no clips in split {cfg.split!r} to tune the sampler on")
    info = corpus_info(corpus)
    return SearchInputs(bundle=str(folder.resolve()), data=data, rows=rows,
                        info={r["clip_id"]: info.get(r["clip_id"], {}) for r in rows}, seeds=cfg.seeds,
                        steps=cfg.steps, spacing=cfg.spacing, reference=cfg.reference,
                        threads=int(cfg.cpus_per_trial), device=cfg.device)


def run_grid(cfg: SamplerSearchConfig, inputs: SearchInputs, stage: str, **axes: list[float]) -> list[dict[str, Any]]:
    """One trial per point of ``axes`` (guidance, lip_eta, eye_eta value lists): the setting and its scores."""
    from ray import tune

    from disenttalk import paths

    if not all(axes.values()):
        return []
    storage_path = storage.absolute(cfg.storage_path) if cfg.storage_path else str(paths.home() / "ray_results")
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_trial, inputs=inputs),
                            {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}),
        param_space={k: tune.grid_search(v) for k, v in axes.items()},
        tune_config=tune.TuneConfig(),
        run_config=tune.RunConfig(name=f"sampler-{Path(inputs.bundle).name}-{stage}", verbose=0,
                                  storage_path=storage_path),
    )
    results = tuner.fit()
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RuntimeError(f"{len(errors)} sampler trial(s) failed: {errors[0]}")
    return [{"stage": stage, **{k: float(r.config[k]) for k in SETTING}, **{k: float(r.metrics[k]) for k in SCORES}}
            for r in results]


def search(cfg: SamplerSearchConfig, inputs: SearchInputs) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(every trial's row, the winner): the lips grid at the middle eye η, then the eye grid at
    the lips' winner (see the module docstring)."""
    probe = cfg.eye_etas[len(cfg.eye_etas) // 2]
    lips = run_grid(cfg, inputs, "lips", guidance=list(cfg.guidances), lip_eta=list(cfg.lip_etas),
                    eye_eta=[probe]) if len(cfg.guidances) * len(cfg.lip_etas) > 1 else []
    lip = best_lips(lips) if lips else {"guidance": cfg.guidances[0], "lip_eta": cfg.lip_etas[0]}
    eyes = run_grid(cfg, inputs, "eyes", guidance=[lip["guidance"]], lip_eta=[lip["lip_eta"]],
                    eye_eta=[e for e in cfg.eye_etas if not (lips and e == probe)])
    table = lips + eyes
    best = choose([r for r in table if (r["guidance"], r["lip_eta"]) == (lip["guidance"], lip["lip_eta"])],
                  cfg.lmd_tolerance)
    return table, best


def record(cfg: SamplerSearchConfig, inputs: SearchInputs, table: list[dict[str, Any]], best: dict[str, Any],
           tracker: Any) -> None:
    """The winner and every trial into the bundle's meta.json; the grid and the winner to MLflow."""
    from disenttalk.bundle import update_meta

    update_meta(inputs.bundle, eta=region_eta(best), guidance=best["guidance"],
                sampler_search={"split": cfg.split, "clips": len(inputs.rows), "seeds": list(cfg.seeds),
                                "lmd_tolerance": cfg.lmd_tolerance, "results": table})
    for i, r in enumerate(table):
        tracker.log_metrics({f"grid/{k}": r[k] for k in SETTING + SCORES}, step=i)
    tracker.log_metrics({f"best/{k}": best[k] for k in SETTING + SCORES})


def run(cfg: SamplerSearchConfig, bundle: str, data: str, corpus: str | None = None) -> dict[str, Any]:
    """Search the grid on ``data``'s split, write the winner into the bundle folder; returns it."""
    from workflows.common import format_summary
    from workflows.platform.raycluster import init_ray, shutdown_if_started
    from workflows.platform.tracking import start_run

    inputs = search_inputs(cfg, bundle, data, corpus)
    tic = time.perf_counter()
    started = init_ray(cfg.ray)
    try:
        with start_run(cfg.mlflow, params=cfg, tags={"stage": "tune-sampler", "bundle": bundle,
                                                      "data": inputs.data}) as tracker:
            table, best = search(cfg, inputs)
            record(cfg, inputs, table, best, tracker)
            summary = {"split": f"{cfg.split} ({len(inputs.rows)} clips, {len(cfg.seeds)} seeds)",
                       **{k: best[k] for k in ("eye_eta", "lip_eta", "guidance", "blink_rate", "truth_blink_rate",
                                               "lmd")},
                       "trials": len(table), "seconds": round(time.perf_counter() - tic, 1)}
            typer.echo(format_summary(f"tune-sampler → {Path(bundle) / 'meta.json'}", summary))
            return {"best": best, "results": table, "run_id": tracker.run_id}
    finally:
        shutdown_if_started(started)


@user_errors("tune-sampler")
def cli(
    bundle: str = typer.Option(..., "--bundle", help="local bundle folder (its meta.json is updated)"),
    data: str = typer.Option(..., "--data", help="preprocessed clip store (folder or s3:// URI)"),
    corpus: str | None = typer.Option(None, "--corpus", help="corpus folder whose manifest names speaker photos"),
    config: Path | None = typer.Option(None, "--config", help="YAML (default configs/tune_sampler.yaml)"),
    overrides: list[str] = typer.Option([], "--set", help="key=value, repeatable (e.g. eye_etas=[0.3,0.5])"),
) -> None:
    """Choose DDIM η and guidance for a trained bundle on val clips with Ray Tune; store them in it."""
    from workflows.common import load_config

    run(load_config(SamplerSearchConfig, "tune_sampler", config, overrides), bundle, data, corpus)


if __name__ == "__main__":  # Ray job entrypoint: python -m tune.sampler
    typer.run(cli)
