"""Scoring clips as Ray tasks, and the per-split tables of their metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from workflows.evaluation.clip_task import evaluate_clip
from workflows.evaluation.config import REFERENCES, SYSTEM, EvaluateConfig, gap_closed
from workflows.platform import storage

Table = dict[str, dict[str, dict[str, float]]]  # {system: {split: {metric: value}}}


def score_clips(rows: list[dict], data: str, bundle_dir: str | Path, expert_dir: str | Path,
                cfg: EvaluateConfig, info: dict[str, dict[str, Any]], desc: str = "evaluate clips") -> list[dict]:
    """:func:`evaluate_clip` for every row as Ray tasks (``num_cpus_per_clip`` each), in completion order.

    ``data`` must be absolute (``storage.absolute``): the tasks run in other working directories."""
    import ray

    # "DEFAULT": scheduled on the cluster even when called from a Tune trial, whose placement
    # group would otherwise capture the tasks (a sweep scores its trials this way)
    task = ray.remote(num_cpus=cfg.num_cpus_per_clip, num_gpus=cfg.num_gpus_per_clip,
                      scheduling_strategy="DEFAULT")(evaluate_clip)
    # the bundle and the evaluator (driver-local folders) reach every node through the object
    # store, once each; the clip store is a URI every node reads
    bundle_ref, expert_ref = ray.put(storage.pack_dir(bundle_dir)), ray.put(storage.pack_dir(expert_dir))
    refs = [task.remote(row, data, bundle_ref, expert_ref, cfg, info.get(row["clip_id"], {})) for row in rows]
    results = []
    with tqdm(total=len(refs), desc=desc) as bar:
        pending = refs
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            results.extend(ray.get(done))
            bar.update(len(done))
    return results


def aggregate(results: list[dict], groups: dict[str, list[dict]]) -> Table:
    """{system: {split: {metric: mean over the split's clips, n_clips}}} (NaN-aware means); the
    model's rows add ``gap_closed`` and the truth's blinks pooled over the split (``truth_blinks``
    in ``truth_seconds``) with the 95 % interval of the rate they measure
    (``truth_blink_rate_low``/``_high``): how closely that split can judge a blink rate at all."""
    by_id = {r["clip_id"]: r for r in results}
    scored_systems = set().union(*(r["scores"] for r in results)) if results else {SYSTEM}
    table: Table = {}
    for system in (s for s in (SYSTEM, *REFERENCES) if s in scored_systems):  # without baselines: model, truth
        table[system] = {split: _means(by_id, rows, system) for split, rows in groups.items()}
    for split, entry in table[SYSTEM].items():
        entry.update(_truth_blinks(by_id, groups[split]))
        nothing = {"lmd": math.nan, "lmd_decoded": math.nan}
        still, oracle = table.get("still", {}).get(split, nothing), table.get("oracle", {}).get(split, nothing)
        entry["gap_closed"] = gap_closed(entry["lmd"], still["lmd"], oracle["lmd"])
        entry["gap_closed_decoded"] = gap_closed(entry["lmd_decoded"], still["lmd_decoded"],
                                                 oracle["lmd_decoded"])
    return table


def _means(by_id: dict[str, dict], rows: list[dict], system: str) -> dict[str, float]:
    """``n_clips`` and the NaN-aware mean of every metric of ``system`` over the scored ``rows``."""
    from disenttalk.metrics.clip import METRICS

    scored = [by_id[r["clip_id"]]["scores"][system] for r in rows if r["clip_id"] in by_id]
    entry = {"n_clips": float(len(scored))}
    for m in METRICS:
        values = np.array([s[m] for s in scored], dtype=float)
        entry[m] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    return entry


def _truth_blinks(by_id: dict[str, dict], rows: list[dict]) -> dict[str, float]:
    """The truth's blinks and seconds pooled over ``rows``, with the 95 % interval of their rate."""
    from disenttalk.metrics.landmarks import poisson_rate_interval

    counted = [by_id[r["clip_id"]]["truth_blinks"] for r in rows if "truth_blinks" in by_id.get(r["clip_id"], {})]
    blinks, seconds = sum(n for n, _ in counted), sum(s for _, s in counted)
    low, high = poisson_rate_interval(blinks, seconds) if seconds > 0 else (math.nan, math.nan)
    return {"truth_blinks": float(blinks), "truth_seconds": float(seconds),
            "truth_blink_rate_low": low, "truth_blink_rate_high": high}
