"""``disenttalk fit``: the morphable model and the lip / eye / global split from the clip store.

Reads the training split's landmarks from a preprocessed store, fits
:class:`~disenttalk.face.morphable.MorphableModel` (the stand-in for the paper's 3DMM, Sec.
III-A), picks region dimensions by |Δ|/σ (Eq. 1–2, :func:`~disenttalk.face.regions.select_regions`)
and encodes every clip of every split. Outputs under ``--out`` (local folder or ``s3://``)::

    morphable.npz          the model (MorphableModel.save)
    regions.json           RegionSplit with per-dim scores
    region_scores.json     |Δ|/σ per dim for lip and eye, chosen dims, σ per dim
    region_scores.png      the same as bar plots, chosen dims marked
    motion/<sha256>.npz    per clip: expression [T,N], pose [T,6], identity [K] (NaN where invalid)
    summary.json           metrics of the fit

All of it is logged to MLflow. The corpus is cut into shards (``shard_clips`` clips each, or by
default about four per cluster CPU), and Ray tasks reduce each shard where it runs to fixed-size sufficient statistics
(:mod:`disenttalk.face.stats`: sums for the Procrustes mean, the scatter matrices of clip
means and of frames around them, code and |Δ| sums for Eq. 1); the driver adds them up and
takes the PCAs, so its memory stays flat however large the corpus. The passes: Procrustes
(3), scatter (1), then one that encodes every clip, writes its motion and adds the region
statistics of the training clips. The result equals :meth:`MorphableModel.fit` +
``select_regions`` on all clips at once (to ~1e-6, tests/unit/test_face_stats.py).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import typer
from pydantic import Field, model_validator

from disenttalk.bundle import MORPHABLE, REGIONS
from disenttalk.config import StrictConfig
from workflows.common import format_summary, load_config, user_errors
from workflows.platform import clipstore, storage
from workflows.platform.raycluster import RayConfig
from workflows.platform.tracking import MlflowConfig

SCORES_JSON = "region_scores.json"
SCORES_PNG = "region_scores.png"


class FitConfig(StrictConfig):
    """Config of ``disenttalk fit`` (``configs/fit.yaml``)."""

    n_expression: int = Field(64, gt=0)  # N, the paper's 64 expression coefficients
    n_identity: int | None = Field(None, ge=0)  # None: one per training clip minus one
    k_lip: int = Field(13, gt=0)  # K_lip (Eq. 1)
    k_eye: int = Field(8, gt=0)  # K_eye (Eq. 1)
    # "sigma": the paper's |Δ|/σ (Eq. 1). "none": |Δ| alone, comparable across dims because the
    # expression basis is orthonormal; see select_regions for when that is the better choice.
    region_score: Literal["sigma", "none"] = "sigma"
    train_split: str = "train"
    io_threads: int = Field(8, gt=0)  # parallel record reads / motion writes within a task
    # Clips per Ray task (each task returns one ~33 MB statistic); None: ~4 shards per CPU.
    shard_clips: int | None = Field(None, gt=0)
    cpus_per_task: float = Field(1.0, gt=0)
    ray: RayConfig = RayConfig()
    mlflow: MlflowConfig = MlflowConfig(experiment="disenttalk-fit")

    @model_validator(mode="after")
    def _check(self) -> FitConfig:
        if self.k_lip + self.k_eye > self.n_expression:
            raise ValueError("k_lip + k_eye must not exceed n_expression")
        return self


def motion_name(row: dict[str, Any]) -> str:
    """Relative path of a clip's expression/pose arrays (named by content hash, like its record)."""
    return f"motion/{row['content_hash']}.npz"


def read_split(fit: str):
    """The fitted :class:`~disenttalk.face.regions.RegionSplit` (``<fit>/regions.json``)."""
    from disenttalk.face.regions import RegionSplit

    return RegionSplit.from_dict(json.loads(storage.read_text(storage.join(fit, REGIONS))))


def read_morphable(fit: str):
    """The fitted :class:`~disenttalk.face.morphable.MorphableModel`."""
    from disenttalk.face.morphable import MorphableModel

    with storage.local_copy(storage.join(fit, MORPHABLE)) as path:
        return MorphableModel.load(path)


def read_expression(fit: str, row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expression [T,N], pose [T,6] and identity [K] of the clip of an index row."""
    data = storage.read_bytes(storage.join(fit, motion_name(row)))
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return npz["expression"], npz["pose"], npz["identity"]


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def scores_figure(split, chosen_marker: str = "*"):
    """Bar plots of |Δ|/σ per expression dim for lip and eye, chosen dims in colour and starred."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    for ax, region, colour in zip(axes, ("lip", "eye"), ("tab:red", "tab:blue"), strict=True):
        scores = np.asarray(split.scores[region])
        chosen = set(split.indices(region))
        dims = np.arange(len(scores))
        ax.bar(dims, scores, color=[colour if i in chosen else "0.7" for i in dims])
        for i in chosen:
            ax.text(i, scores[i], chosen_marker, ha="center", va="bottom", color=colour)
        ax.set_ylabel(f"{region}: |Δ|/σ")
        ax.set_title(f"{region}: {len(chosen)} dims chosen (Eq. 1)", fontsize=10)
    axes[-1].set_xlabel("expression dimension")
    return fig


def _recon_nme(model, landmarks: np.ndarray, coded: tuple) -> tuple[float, int]:
    """Summed per-frame mean landmark error / face size (NME) over valid frames, and their count."""
    from disenttalk.face.measures import face_size

    decoded = model.decode(*coded)  # [T,478,3]
    ok = np.isfinite(landmarks).all(axis=(1, 2)) & np.isfinite(decoded).all(axis=(1, 2))
    if not ok.any():
        return 0.0, 0
    # x, y only: MediaPipe's z has no fixed origin and decodes centred (see disenttalk.face.pose).
    err = np.linalg.norm(decoded[ok, :, :2] - landmarks[ok, :, :2], axis=-1).mean(-1)  # [T']
    return float((err / face_size(landmarks[ok])).sum()), int(ok.sum())


def _landmarks(data: str, row: dict[str, Any]) -> np.ndarray:
    """A clip's landmarks [T,478,3] float64, NaN on frames the tracker lost."""
    rec = clipstore.read_record(data, row)
    lm = rec.landmarks.astype(np.float64)
    lm[~rec.valid] = np.nan  # the model skips invalid frames
    return lm


def _clips(data: str, rows: list[dict[str, Any]], threads: int):
    """The shard's clips' landmarks, in order, read by ``threads`` threads with at most
    ``threads`` clips read ahead (a task's memory does not grow with its shard)."""
    with ThreadPoolExecutor(threads) as pool:
        ahead: deque = deque()
        for row in rows:
            ahead.append(pool.submit(_landmarks, data, row))
            if len(ahead) > threads:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _procrustes_task(data: str, rows: list[dict[str, Any]], reference: np.ndarray, threads: int):
    from disenttalk.face.stats import clip_mean_sum

    return clip_mean_sum(_clips(data, rows, threads), reference)


def _scatter_task(data: str, rows: list[dict[str, Any]], reference: np.ndarray, threads: int):
    from disenttalk.face.stats import ShapeStats

    return ShapeStats.of_clips(_clips(data, rows, threads), reference)


def _encode_task(data: str, out: str, rows: list[dict[str, Any]], model, train_split: str,
                 threads: int):
    """Encode the shard's clips, write their motion; (region statistics of its training clips,
    summed NME and frames [train, held-out], {this task's node id})."""
    import ray

    from disenttalk.face.stats import RegionStats

    regions = RegionStats(model.n_expression)
    errors = np.zeros((2, 2))  # rows: training split, held-out; columns: summed NME, frames
    for row, lm in zip(rows, _clips(data, rows, threads), strict=True):
        if not np.isfinite(lm).all(axis=(1, 2)).any():
            continue
        expression, pose, identity = model.encode(lm)
        storage.write_bytes(storage.join(out, motion_name(row)), _npz_bytes(
            expression=expression.astype(np.float32), pose=pose.astype(np.float32),
            identity=identity.astype(np.float32)))  # fmt: skip
        errors[int(row["split"] != train_split)] += _recon_nme(model, lm, (expression, pose, identity))
        if row["split"] == train_split:
            regions.add_clip(model, lm, expression)
    return regions, errors, {ray.get_runtime_context().get_node_id()}


def _add(a, b):
    """Sum of two shard statistics (``+`` of ShapeStats, of (array, count) pairs, …)."""
    if isinstance(a, tuple):
        return tuple(_add(x, y) for x, y in zip(a, b, strict=True))
    return a | b if isinstance(a, set) else a + b


def _reduce(refs: list) -> Any:
    """Add up task results on the cluster, pairwise as they finish (a tree of ``_add`` tasks),
    and fetch only the total: the driver never holds more than one statistic, whatever the
    number of shards. Consumes ``refs``."""
    import ray

    add = ray.remote(_add)
    pending = refs
    while len(pending) > 1:
        ready, pending = ray.wait(pending, num_returns=2)
        pending.append(add.remote(*ready))
        del ready  # the partial results are freed as soon as their sum exists
    total = ray.get(pending.pop())
    return total


def _absolute(uri: str) -> str:
    """Tasks may run elsewhere than the driver's working directory: local paths made absolute."""
    return uri if storage.is_s3(uri) else str(Path(uri).expanduser().resolve())


def _shards(items: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _fit_on_ray(data: str, out: str, rows: list[dict[str, Any]], train_rows: list[dict[str, Any]],
                reference: np.ndarray, cfg: FitConfig) -> dict[str, Any]:
    """The Ray passes: Procrustes (from ``reference``), scatter, then encode (which writes every
    clip's motion).

    Returns the model, the region statistics, summed NME per [train, held-out], the training
    frames, the shard count and the node ids the encode tasks ran on."""
    import ray

    from disenttalk.face.morphable import _GPA_ITERATIONS, MorphableModel
    from disenttalk.face.stats import procrustes_step

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1) / cfg.cpus_per_task))
    size = cfg.shard_clips or max(1, math.ceil(len(rows) / (4 * cpus)))
    opts = {"num_cpus": cfg.cpus_per_task}
    procrustes = ray.remote(**opts)(_procrustes_task)
    scatter = ray.remote(**opts)(_scatter_task)
    encode = ray.remote(**opts)(_encode_task)
    threads = cfg.io_threads
    for _ in range(_GPA_ITERATIONS):
        ref = ray.put(reference)
        total, count = _reduce([procrustes.remote(data, s, ref, threads) for s in _shards(train_rows, size)])
        reference = procrustes_step(total, count)
    ref = ray.put(reference)
    stats = _reduce([scatter.remote(data, s, ref, threads) for s in _shards(train_rows, size)])
    model = MorphableModel.from_stats(stats, n_expression=cfg.n_expression, n_identity=cfg.n_identity)
    train_frames = stats.frames
    del stats
    model_ref = ray.put(model)
    regions, errors, nodes = _reduce(
        [encode.remote(data, out, s, model_ref, cfg.train_split, threads) for s in _shards(rows, size)])
    return {"model": model, "regions": regions, "errors": errors, "train_frames": train_frames,
            "shards": len(_shards(rows, size)), "nodes": nodes}


def _write_outputs(out: str, model, split) -> Any:
    """``morphable.npz``, ``regions.json``, ``region_scores.json`` and ``.png``; returns the figure."""
    storage.makedirs(out)
    storage.write_bytes(storage.join(out, MORPHABLE), _npz_bytes(
        mean=model.mean, identity_basis=model.identity_basis,
        expression_basis=model.expression_basis, expression_std=model.expression_std,
        identity_std=model.identity_std, n_effective=np.int64(model.n_effective)))  # fmt: skip
    storage.write_text(storage.join(out, REGIONS), json.dumps(split.to_dict(), indent=2))
    report = {
        region: {"scores": list(split.scores[region]), "chosen": list(split.indices(region))}
        for region in ("lip", "eye")
    }
    report["global"] = {"chosen": list(split.global_)}
    report["sigma"] = model.expression_std.tolist()
    storage.write_text(storage.join(out, SCORES_JSON), json.dumps(report, indent=2))
    figure = scores_figure(split)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    storage.write_bytes(storage.join(out, SCORES_PNG), png.getvalue())
    return figure


def _mean_nme(total: np.ndarray) -> float:
    return float(total[0] / total[1]) if total[1] else float("nan")


def _summary(rows: list[dict[str, Any]], train_rows: list[dict[str, Any]], fitted: dict[str, Any],
             split) -> dict[str, Any]:
    """The fit's metrics (``seconds`` is added by the caller)."""
    model, errors, nodes = fitted["model"], fitted["errors"], fitted["nodes"]
    var = np.square(model.expression_std)
    return {
        "clips": len(rows),
        "train_clips": len(train_rows),
        "train_frames": int(fitted["train_frames"]),
        "n_effective": model.n_effective,
        "recon_nme_train": _mean_nme(errors[0]),
        "recon_nme_heldout": _mean_nme(errors[1]),
        "var_share_lip": float(var[list(split.lip)].sum() / max(var.sum(), 1e-30)),
        "var_share_eye": float(var[list(split.eye)].sum() / max(var.sum(), 1e-30)),
        "lip_score_mean": float(np.mean([split.scores["lip"][i] for i in split.lip])),
        "eye_score_mean": float(np.mean([split.scores["eye"][i] for i in split.eye])),
        "shards": fitted["shards"],
        "nodes_used": len(nodes),
        "nodes": sorted(nodes),  # Ray node ids its encode tasks ran on
    }


def _log(cfg: FitConfig, data: str, out: str, summary: dict[str, Any], figure: Any) -> None:
    """The stage's MLflow run: params, metrics, the figure and the output files."""
    from workflows.platform import tracking

    with tracking.start_run(cfg.mlflow, cfg, tags={"stage": "fit"}) as run_log:
        run_log.log_params({"data": data, "out": out})
        run_log.log_metrics(summary)
        run_log.log_figure(figure, SCORES_PNG)
        for name in (MORPHABLE, REGIONS, SCORES_JSON, "summary.json"):
            run_log.log_bytes(name, storage.read_bytes(storage.join(out, name)))


def run(data: str, out: str, cfg: FitConfig) -> dict[str, Any]:
    """Fit the morphable model and the region split on ``data``; write and log everything."""
    from disenttalk.face.stats import initial_reference
    from workflows.platform.raycluster import init_ray, shutdown_if_started

    start = time.perf_counter()
    rows = sorted(clipstore.read_index(data), key=lambda r: r["clip_id"])
    train_rows = [r for r in rows if r["split"] == cfg.train_split]
    if not train_rows:
        raise ValueError(f"{data}: no clips in split {cfg.train_split!r}")
    data, out = _absolute(data), _absolute(out)
    # The first valid frame of the first training clip starts Procrustes, as in MorphableModel.fit.
    reference = initial_reference(_landmarks(data, r) for r in train_rows)
    started = init_ray(cfg.ray)
    try:
        fitted = _fit_on_ray(data, out, rows, train_rows, reference, cfg)
    finally:
        shutdown_if_started(started)
    split = fitted["regions"].split(k_lip=cfg.k_lip, k_eye=cfg.k_eye, normalise=cfg.region_score)
    figure = _write_outputs(out, fitted["model"], split)
    summary = {**_summary(rows, train_rows, fitted, split), "seconds": time.perf_counter() - start}
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    _log(cfg, data, out, summary, figure)
    return summary


@user_errors("fit")
def cli(
    data: str = typer.Option(..., help="preprocessed clip store: local folder or s3:// prefix"),
    out: str = typer.Option(..., help="fit outputs: local folder or s3:// prefix"),
    config: Path | None = typer.Option(None, help="YAML config (default configs/fit.yaml)"),
    set_: list[str] = typer.Option([], "--set", help="override, e.g. k_lip=13"),
) -> None:
    """Fit the morphable model and the lip/eye/global region split; encode every clip."""
    cfg = load_config(FitConfig, "fit", config, set_)
    typer.echo(format_summary("fit", run(data, out, cfg)))


if __name__ == "__main__":  # Ray job entrypoint
    typer.run(cli)
