"""``disenttalk sweep``: search K_lip / K_eye, λ, any train key and the guidance scale with Ray Tune.

Each trial is one Ray Train run (``workflows.train.run``) launched from a Tune function trainable,
with the trial's region split and train keys:

- ``k_lip`` / ``k_eye`` re-select the region split from the fit's per-dim scores (Eq. 2 on the
  stored Eq. 1 scores: the morphable model is fitted once, every trial selects from it);
  ``regions: single`` puts every dim in one region (the ablation without disentanglement);
- ``sync_weight`` is λ (Eq. 10), i.e. ``train.sync_weight``; any other train-stage key by its
  dotted name (``train.lr``, ``model.denoiser.dim``, ...);
- ``guidance`` (Eq. 9) and ``eta`` are searched at inference on every trained trial, without
  retraining (``inference:``); the chosen values are written into the trial's bundle.

Every denoiser checkpoint reports ``val_lip_error`` (sampled lips on fixed validation windows,
see :mod:`workflows.train.validation`) to Tune, so the ASHA scheduler stops trials that fall
behind early. A trial that finishes training is scored like ``evaluate`` scores a model: motion
for the objective split's clips is rendered onto the speaker's photo, re-tracked, and measured
against the tracked truth by one shared sync evaluator. The objective (``objective:``):

    minimise ``lmd`` (mouth landmark distance of the re-tracked renders) subject to
    |blink rate / truth's − 1| ≤ ``max_blink_error`` and sync confidence ≥ ``min_sync_ratio`` ×
    the truth's; settings breaking a constraint rank after every setting that keeps both.

Every trial is a nested MLflow run under the sweep's run (the train stage's own run: params,
curves, the bundle) with its objective metrics and ``stop_reason``. The sweep's run holds the
trial table (CSV, markdown), a plot of the objective against each searched key, and the
comparison with the registry's champion: the best trial's bundle is registered as a new version
of ``disenttalk``, and the ``champion`` alias moves to it only if its val LMD beats the
champion's (scored again here, on the same clips, seeds and evaluator) by more than
``champion.margin`` (relative; the run-to-run spread of identical training runs, see the README).

``report.splits`` adds the paper's metrics (LMD, blink rate, sync confidence, CPBD) of every
trained trial and of ``report.inference_variants`` (a trained trial sampled differently, e.g.
without guidance) on those splits: the ablation table (``--preset ablation``).

A sweep whose driver dies resumes with the same command: Tune restores the experiment from
``<storage>/<name>`` and finished trials are not rerun; an unfinished trial's Train run resumes
from its own last checkpoint.

Modules: ``tune.config`` (the config), ``tune.space`` (search space, trial ids), ``tune.training``
(a trial's train-stage config), ``tune.trial`` (the trial function and its inputs),
``tune.scoring`` (the yardstick and the objective), ``tune.report`` (tables, figure, files),
``tune.runs`` (MLflow runs), ``tune.champion`` (registering the best); this module runs the sweep.
Scoring uses the public evaluation API, :mod:`workflows.evaluation`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from tune.champion import describe, promote_best
from tune.config import INFERENCE_KEYS, METRIC, SweepConfig
from tune.report import report_table, trial_table, write_outputs
from tune.runs import close_parent, close_trial_runs, open_parent
from tune.scoring import Yardstick, evaluator_basis, objective_rows, scoring_config
from tune.space import check_regions, param_space, searcher
from tune.training import check_train_keys
from tune.trial import TrialInputs, run_trial
from workflows.common import user_errors
from workflows.platform import storage
from workflows.train import TrainStageConfig

__all__ = ["PRESETS", "SweepConfig", "cli", "run"]
BEST_KEYS = ("trial", "lmd", "blink_rate", "truth_blink_rate", "sync_conf", "truth_sync_conf", *INFERENCE_KEYS)


@dataclass(frozen=True)
class Plan:
    """What a sweep works on, resolved in the driver before anything runs: absolute locations
    (or s3:// URIs), the train stage, the objective's clips, the corpus info."""

    data: str
    fit: str
    out: str
    storage_path: str  # Tune's results: <storage_path>/<name>
    work: Path  # local scratch (the evaluator, its basis, champion copies)
    stage: TrainStageConfig  # the train stage with the sweep's ``train`` overrides
    rows: list[dict]  # the objective split's clips
    info: dict[str, dict[str, Any]]
    parent_run_id: str | None  # the sweep's MLflow run, when it resumes

    @property
    def state_uri(self) -> str:
        """Where the sweep keeps what a resumed driver needs (its MLflow run)."""
        return storage.join(self.out, "sweep.json")

    @property
    def reports(self) -> int:
        """Reports a trial that trains to the end makes: one per checkpoint, and the scored one."""
        return -(-self.stage.train.denoiser_steps // self.stage.run.checkpoint_every) + 1


def prepare(cfg: SweepConfig, data: str, fit: str, out: str, corpus: str | None) -> Plan:
    """Resolve the locations and refuse what cannot run (K values the fit cannot give, unknown
    train keys, an objective split without clips) before any trial runs."""
    from workflows import fit as fit_stage
    from workflows.evaluation import corpus_info
    from workflows.train import load_stage_config

    data, fit, out = (storage.absolute(os.path.expanduser(u)) for u in (data, fit, out))
    check_regions(cfg, fit_stage.read_split(fit))
    stage = load_stage_config(None, cfg.train)
    check_train_keys(cfg, stage)
    rows = objective_rows(data, cfg.objective.split, cfg.objective.max_clips)
    if not rows:
        raise ValueError(f"{data}: no clips in split {cfg.objective.split!r} to score trials on")
    info = corpus_info(corpus)
    storage.makedirs(out)
    work = Path(out) / "work" if not storage.is_s3(out) else Path(tempfile.mkdtemp(prefix="sweep-"))
    state_uri = storage.join(out, "sweep.json")
    state = json.loads(storage.read_text(state_uri)) if storage.exists(state_uri) else {}
    storage_path = storage.absolute(cfg.storage_path) if cfg.storage_path else storage.join(out, "tune")
    return Plan(data=data, fit=fit, out=out, storage_path=storage_path, work=work, stage=stage, rows=rows,
                info=info, parent_run_id=state.get("parent_run_id"))


def trial_inputs(cfg: SweepConfig, plan: Plan) -> tuple[TrialInputs, Any]:
    """The shared evaluator (trained or reused) and the sweep's MLflow run (opened or resumed), as
    the trials' inputs; and the MLflow client (None without tracking)."""
    from workflows.evaluation import evaluator_dir
    from workflows.platform import tracking

    expert_dir = evaluator_dir(plan.data, plan.out, evaluator_basis(plan.data, plan.fit, plan.work / "basis"),
                               scoring_config(cfg), plan.work)
    uri = tracking.tracking_uri()  # once, here: trials run in other working directories
    client, run_id = open_parent(cfg, uri, plan.parent_run_id, tags={
        "stage": "sweep", "data": plan.data, "fit": plan.fit, "out": plan.out})
    state = {"parent_run_id": run_id} if run_id else {}
    storage.write_text(plan.state_uri, json.dumps(state, indent=2))
    yardstick = Yardstick(data=plan.data, expert_dir=str(expert_dir), info=plan.info, evaluate=scoring_config(cfg))
    return TrialInputs(sweep=cfg, stage=plan.stage, fit=plan.fit, root=plan.out, rows=plan.rows,
                       yardstick=yardstick, tracking_uri=uri, parent_run_id=run_id), client


def make_tuner(cfg: SweepConfig, inputs: TrialInputs, plan: Plan) -> Any:
    """The Tune experiment ``<storage_path>/<name>``: restored (finished trials kept) when it
    exists, else new, with ASHA (or FIFO), the searcher and the trial function."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    # The trial function itself only waits on its Ray Train run and Ray tasks, which reserve
    # their own CPUs; it reserves a token share so that Tune accepts the request.
    trainable = tune.with_resources(tune.with_parameters(run_trial, inputs=inputs), {"cpu": 0.01})
    fs = storage.s3_filesystem() if storage.is_s3(plan.storage_path) else None
    path = storage.join(plan.storage_path, cfg.name)
    if tune.Tuner.can_restore(storage.filesystem(path)[1] if fs else path, storage_filesystem=fs):
        typer.echo(f"sweep: resuming {path} (finished trials are kept)")
        return tune.Tuner.restore(storage.filesystem(path)[1] if fs else path, trainable,
                                  resume_unfinished=True, resume_errored=True, storage_filesystem=fs)
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=plan.reports,
                               grace_period=cfg.scheduler.grace_period,
                               reduction_factor=cfg.scheduler.reduction_factor)
                 if cfg.scheduler.type == "asha" else FIFOScheduler())
    return tune.Tuner(
        trainable, param_space=param_space(cfg),
        tune_config=tune.TuneConfig(metric=METRIC, mode="min", scheduler=scheduler, search_alg=searcher(cfg),
                                    num_samples=cfg.num_samples, max_concurrent_trials=cfg.max_concurrent_trials),
        run_config=tune.RunConfig(name=cfg.name, storage_path=storage.filesystem(plan.storage_path)[1] if fs
                                  else plan.storage_path, storage_filesystem=fs, verbose=1,
                                  failure_config=tune.FailureConfig(max_failures=0)),
    )


def conclude(cfg: SweepConfig, table: list[dict[str, Any]], inputs: TrialInputs,
             plan: Plan) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(outcome, report): trial counts and the best trial, registered by the champion rule; the
    report on ``report.splits``; both written under ``out`` with the trial table."""
    completed = [r for r in table if r["status"] == "completed"]
    outcome: dict[str, Any] = {"trials": len(table), "completed": len(completed),
                               "stopped_early": sum(r["status"].startswith("stopped") for r in table),
                               "failed": sum(r["status"].startswith("error") for r in table)}
    if completed:
        best = completed[0]
        outcome["best"] = {k: best[k] for k in best if k.startswith("param/") or k in BEST_KEYS}
        if cfg.champion.enabled:
            outcome["champion"] = promote_best(best, cfg, inputs.yardstick, inputs.rows, plan.work)
    report = report_table(completed, cfg, inputs.yardstick) if cfg.report.splits else []
    write_outputs(plan.out, table, report, outcome)
    return outcome, report


def run(cfg: SweepConfig, data: str, fit: str, out: str, corpus: str | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep; writes the trial table, plots and report under ``out``."""
    from workflows.common import format_summary
    from workflows.platform.raycluster import init_ray, shutdown_if_started

    tic = time.perf_counter()
    plan = prepare(cfg, data, fit, out, corpus)
    started = init_ray(cfg.ray)
    try:
        inputs, client = trial_inputs(cfg, plan)
        table = trial_table(list(make_tuner(cfg, inputs, plan).fit()), cfg)
        close_trial_runs(table, cfg, inputs.tracking_uri)
        outcome, report = conclude(cfg, table, inputs, plan)
        if client is not None:
            close_parent(client, inputs.parent_run_id, plan.out, outcome, report)
        outcome["seconds"] = round(time.perf_counter() - tic, 1)
        typer.echo(format_summary(f"sweep → {plan.out}", {k: v for k, v in outcome.items() if k != "champion"}))
        if "champion" in outcome:
            typer.echo(describe(outcome["champion"]))
        return {"table": table, "report": report, **outcome, "parent_run_id": inputs.parent_run_id}
    finally:
        shutdown_if_started(started)


PRESETS = ("demo", "ablation")


@user_errors("sweep")
def cli(
    data: str | None = typer.Option(None, help="preprocessed clip store (default: the quickstart's)"),
    fit: str | None = typer.Option(None, help="fit outputs (default: the quickstart's)"),
    out: str | None = typer.Option(None, help="sweep folder or s3:// prefix (default <workspace>/sweep-<preset>)"),
    corpus: str | None = typer.Option(None, help="corpus folder whose manifest names speaker photos"),
    preset: str | None = typer.Option(None, help="demo (≤ 25 min on 2 cores) | ablation (the paper's Table III)"),
    config: Path | None = typer.Option(None, help="YAML (default configs/sweep.yaml, or configs/sweep_<preset>.yaml)"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. num_samples=4"),
) -> None:
    """Search K_lip/K_eye, λ, train keys and guidance with Ray Tune (ASHA); register the best."""
    from disenttalk import paths
    from workflows import fit as fit_stage
    from workflows.common import default_config_path, load_config

    if preset is not None and preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    path = config or (default_config_path(f"sweep_{preset}") if preset else None)
    cfg = load_config(SweepConfig, "sweep", path, set_)
    quick = paths.home() / "quickstart"
    data = data or str(quick / "store")
    fit = fit or str(quick / "fit")
    if corpus is None and (quick / "corpus" / "manifest.jsonl").exists():
        corpus = str(quick / "corpus")
    if not storage.exists(storage.join(fit, fit_stage.REGIONS)):
        raise typer.BadParameter(f"{fit}: no fit outputs (run `make demo` first, or give --data and --fit)")
    out = out or str(paths.home() / f"sweep-{preset or 'default'}")
    run(cfg, data, fit, out, corpus)


if __name__ == "__main__":  # Ray job entrypoint: python -m tune.sweep
    # through the package module, so that what Tune pickles refers to tune.* modules, not __main__
    from tune.sweep import cli as sweep_cli

    typer.run(sweep_cli)
