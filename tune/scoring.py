"""How a sweep scores a trained bundle: the clips, the shared sync evaluator and the evaluate
settings every bundle is measured with, and the objective that ranks the scores (see
:mod:`tune.sweep`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from disenttalk.config import StrictConfig
from tune.config import ObjectiveSection, SweepConfig
from workflows.evaluation import (
    EVALUATOR_BASIS,
    SYSTEM,
    EvaluateConfig,
    aggregate,
    score_clips,
    select_clips,
)
from workflows.platform import clipstore, storage

SPLIT_METRICS = ("lmd", "blink_rate", "sync_conf", "cpbd", "lmd_decoded", "blink_duration", "landmark_change",
                 "n_clips")


def scoring_config(cfg: SweepConfig, **over: Any) -> EvaluateConfig:
    """The evaluate settings a sweep scores with (no baselines, no fidelity pass, one blink sample)."""
    base = EvaluateConfig(fidelity=False, baselines=False, blink_samples=1, seed=cfg.objective.seed)
    if cfg.evaluator_steps:
        base = base.model_copy(update={"evaluator": base.evaluator.model_copy(update={"steps": cfg.evaluator_steps})})
    return base.model_copy(update=over)


def split_scores(results: list[dict], rows: list[dict]) -> dict[str, float]:
    """Model metrics over ``rows`` (evaluate's NaN-aware means) with the truth's blink rate and
    sync confidence, and the two constraint ratios."""
    table = aggregate(results, {"rows": rows})
    model, truth = table[SYSTEM]["rows"], table["truth"]["rows"]
    out = {m: model[m] for m in SPLIT_METRICS}
    out["truth_blink_rate"], out["truth_sync_conf"] = truth["blink_rate"], truth["sync_conf"]
    out["blink_error"] = (abs(out["blink_rate"] / out["truth_blink_rate"] - 1.0)
                          if out["truth_blink_rate"] > 0 else math.nan)
    out["sync_ratio"] = (out["sync_conf"] / out["truth_sync_conf"]
                         if out["truth_sync_conf"] > 0 else math.nan)
    return out


def feasible(scores: dict[str, float], objective: ObjectiveSection) -> bool:
    """Whether a scored setting keeps the blink and sync constraints (NaN counts as kept)."""
    blink_ok = not scores["blink_error"] > objective.max_blink_error
    sync_ok = not scores["sync_ratio"] < objective.min_sync_ratio
    return blink_ok and sync_ok


def rank_key(scores: dict[str, float], objective: ObjectiveSection) -> tuple[int, float]:
    """Sort key: feasible first, then lower LMD (NaN last)."""
    lmd = scores.get("lmd", math.nan)
    return (0 if feasible(scores, objective) else 1, lmd if math.isfinite(lmd) else math.inf)


class Yardstick(StrictConfig):
    """What every bundle of a sweep is measured with, trials and champion alike: the clip store,
    the shared sync evaluator, the corpus manifest's info per clip and the evaluate settings.
    Locations are absolute (or s3://): trials run in their own working directories."""

    data: str
    expert_dir: str
    info: dict[str, dict[str, Any]] = {}
    evaluate: EvaluateConfig

    def score(self, bundle: str, rows: list[dict], desc: str, **over: Any) -> tuple[dict[str, float], list[dict]]:
        """Render, re-track and score ``bundle`` on ``rows`` (``over``: other sampler settings,
        e.g. guidance): (model metrics, per-clip results)."""
        results = score_clips(rows, self.data, bundle, self.expert_dir, self.evaluate.model_copy(update=over),
                              self.info, desc=desc)
        return split_scores(results, rows), results


def objective_rows(data: str, split: str, max_clips: int) -> list[dict]:
    """Up to ``max_clips`` clips of ``split``, shared round-robin across its languages (as evaluate)."""
    return split_rows(data, (split,), max_clips).get(split, [])


def split_rows(data: str, splits: tuple[str, ...], max_clips: int) -> dict[str, list[dict]]:
    """Per split, up to ``max_clips`` clips chosen as evaluate chooses them (no per-language groups)."""
    return select_clips(clipstore.read_index(data),
                        EvaluateConfig(splits=splits, per_language=(), max_clips_per_split=max_clips))


def evaluator_basis(data: str, fit: str, folder: Path) -> Path:
    """The files the shared sync evaluator is built on (:data:`EVALUATOR_BASIS`): the fit's
    morphable model and split, and the training split's normalisation (what every trial's bundle
    is normalised with)."""
    from workflows.train import data as train_data

    morphable, regions, norm = EVALUATOR_BASIS
    folder.mkdir(parents=True, exist_ok=True)
    for name in (morphable, regions):
        (folder / name).write_bytes(storage.read_bytes(storage.join(fit, name)))
    np.savez(folder / norm, **train_data.norm_stats(data, fit, train_data.clip_rows(data, fit, "train")))
    return folder
