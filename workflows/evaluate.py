"""``disenttalk evaluate``: score a model bundle on held-out clips, with baselines, on Ray.

For each clip of ``val``, ``test`` (also per language, as ``test/<lang>``) and ``test_xling``
(capped per split): generate motion from the clip's audio, render it onto a reference image of
the speaker, re-track the rendered video and score it against the truth (``disenttalk.metrics``).
The reference is the speaker's photo when the corpus manifest names one (``portrait``), as a user
would give a photo, else the clip's first frame (``reference`` in the config). A first frame of
a *rendered* clip makes a poor reference: its mouth is already a warp of the photo's, and warping
it again leaves the photo's lip line showing above the painted mouth, which re-tracking follows.
A second generation with the source's own pose and eyes gives PSNR/SSIM. The truth itself,
a still face and the truth delayed by 0.5 s are scored on the same clips. Lip sync is measured
by an *evaluator* sync expert trained here on ground-truth training clips only (its own seed,
never a training loss) and cached in the output folder.

Outputs under ``--out``: ``metrics.json`` ({split: {metric: value}}), ``baselines.json``
({baseline: {split: {metric: value}}}), ``clips.json`` (per clip), ``metrics.md``, plots
(``plots/<split>_{ear,mouth,change}.png``) and ``evaluator/`` (the sync expert); all logged to
MLflow (metrics as ``<split>/<metric>``).

This module is the stage (``run`` and the command); the machinery it runs is the public
evaluation API, :mod:`workflows.evaluation`.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from workflows.common import user_errors
from workflows.evaluation import (
    REFERENCES,
    SYSTEM,
    EvaluateConfig,
    aggregate,
    clip_seed,
    corpus_info,
    evaluator_dir,
    fill_gaps,
    gap_closed,
    score_clips,
    select_clips,
    speaker_blink_rates,
    voice_groups,
)
from workflows.evaluation.report import baseline_tables, plot_splits, summary, write_outputs
from workflows.platform import clipstore, storage
from workflows.register import resolve_bundle

# the stage's names that other modules import from here (the evaluation API has them all)
__all__ = ["REFERENCES", "SYSTEM", "EvaluateConfig", "clip_seed", "evaluate", "fill_gaps", "gap_closed", "run"]


@dataclass(frozen=True)
class Clips:
    """What one evaluation scores: the clips by id, their report groups, the corpus info per clip."""

    rows: dict[str, dict]
    groups: dict[str, list[dict]]
    info: dict[str, dict[str, Any]]


def choose_clips(cfg: EvaluateConfig, data: str, corpus: str | None) -> Clips:
    """The clips of every reported split and group, with what the corpus manifest (and, for
    ``blink_reference: speaker``, the speaker's other clips) tells about each."""
    index = clipstore.read_index(data)
    groups = select_clips(index, cfg)
    info = corpus_info(corpus)
    groups.update(voice_groups(groups, info, cfg.per_voice))
    rows = {r["clip_id"]: r for split in cfg.splits for r in groups.get(split, [])}
    if cfg.blink_reference == "speaker":
        for clip_id, told in speaker_blink_rates(index, data, list(rows)).items():
            info.setdefault(clip_id, {}).update(told)
    return Clips(rows, groups, info)


def run(cfg: EvaluateConfig, bundle: str, data: str, out: str, corpus: str | None = None) -> dict:
    """Evaluate ``bundle`` on the clip store ``data``; writes tables and plots to ``out``; returns the tables."""
    from workflows.common import format_summary
    from workflows.platform.raycluster import init_ray, shutdown_if_started
    from workflows.platform.tracking import start_run

    store = storage.absolute(data)  # the clip tasks run in other working directories
    started = init_ray(cfg.ray)
    tic = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp, start_run(
            cfg.mlflow, params=cfg, tags={"stage": "evaluate", "bundle": bundle, "data": data}
        ) as tracker:
            work = Path(tmp)
            bundle_dir = resolve_bundle(bundle, work)
            clips = choose_clips(cfg, store, corpus)
            expert_dir = evaluator_dir(store, out, bundle_dir, cfg, work)
            results = score_clips(list(clips.rows.values()), store, bundle_dir, expert_dir, cfg, clips.info)
            table = aggregate(results, clips.groups)
            plot_splits(results, clips.groups, work / "plots")
            write_outputs(out, table, results, work / "plots", tracker)
            end = summary(table[SYSTEM], cfg)
            end["seconds"] = round(time.perf_counter() - tic, 1)
            end["mlflow_run"] = tracker.run_id or "disabled"
            typer.echo(format_summary(f"evaluate → {out}", end))
            return {"metrics": table[SYSTEM], "baselines": baseline_tables(table), "run_id": tracker.run_id}
    finally:
        shutdown_if_started(started)


@user_errors("evaluate")
def evaluate(
    bundle: str = typer.Option(..., "--bundle", help="bundle folder, s3:// URI or models:/name@alias"),
    data: str = typer.Option(..., "--data", help="preprocessed clip store (folder or s3:// URI)"),
    out: str = typer.Option(..., "--out", help="where tables, plots and the evaluator go"),
    corpus: str | None = typer.Option(None, "--corpus", help="demo corpus folder with truth .npz files"),
    config: Path | None = typer.Option(None, "--config", help="YAML (default configs/evaluate.yaml)"),
    overrides: list[str] = typer.Option([], "--set", help="section.key=value, repeatable"),
) -> None:
    """Score a model bundle on val/test/test_xling clips with baselines; log everything to MLflow."""
    from workflows.common import load_config

    run(load_config(EvaluateConfig, "evaluate", config, overrides), bundle, data, out, corpus)


if __name__ == "__main__":  # Ray job entrypoint: python -m workflows.evaluate ...
    typer.run(evaluate)
