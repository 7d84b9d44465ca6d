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

All of it is logged to MLflow. The fit is one matrix decomposition on the driver; records
are read with a thread pool (I/O bound, and numpy releases the GIL in the encodes).
"""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import typer
from pydantic import Field, model_validator

from disenttalk.config import StrictConfig
from workflows.common import format_summary, load_config, user_errors
from workflows.platform import clipstore, storage
from workflows.platform.tracking import MlflowConfig

MORPHABLE = "morphable.npz"
REGIONS = "regions.json"
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
    io_threads: int = Field(8, gt=0)  # parallel record reads / motion writes
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


def run(data: str, out: str, cfg: FitConfig) -> dict[str, Any]:
    """Fit the morphable model and the region split on ``data``; write and log everything."""
    from disenttalk.face.morphable import MorphableModel
    from disenttalk.face.regions import select_regions
    from workflows.platform import tracking

    start = time.perf_counter()
    rows = sorted(clipstore.read_index(data), key=lambda r: r["clip_id"])
    train_rows = [r for r in rows if r["split"] == cfg.train_split]
    if not train_rows:
        raise ValueError(f"{data}: no clips in split {cfg.train_split!r}")

    def landmarks(row: dict[str, Any]) -> np.ndarray:
        rec = clipstore.read_record(data, row)
        lm = rec.landmarks.astype(np.float64)  # [T,478,3]
        lm[~rec.valid] = np.nan  # the model skips invalid frames
        return lm

    with ThreadPoolExecutor(cfg.io_threads) as pool:
        all_landmarks = dict(zip([r["clip_id"] for r in rows], pool.map(landmarks, rows), strict=True))
    train = [all_landmarks[r["clip_id"]] for r in train_rows]
    model = MorphableModel.fit(train, n_expression=cfg.n_expression, n_identity=cfg.n_identity)
    split = select_regions(model, train, k_lip=cfg.k_lip, k_eye=cfg.k_eye, normalise=cfg.region_score)

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

    def encode(row: dict[str, Any]) -> tuple[str, float, int]:
        lm = all_landmarks[row["clip_id"]]
        if not np.isfinite(lm).all(axis=(1, 2)).any():
            return row["split"], 0.0, 0
        expression, pose, identity = model.encode(lm)
        storage.write_bytes(storage.join(out, motion_name(row)), _npz_bytes(
            expression=expression.astype(np.float32), pose=pose.astype(np.float32),
            identity=identity.astype(np.float32)))  # fmt: skip
        return (row["split"], *_recon_nme(model, lm, (expression, pose, identity)))

    with ThreadPoolExecutor(cfg.io_threads) as pool:
        errors = list(pool.map(encode, rows))
    train_err = [(e, n) for s, e, n in errors if s == cfg.train_split]
    held_err = [(e, n) for s, e, n in errors if s != cfg.train_split]

    def mean_nme(pairs: list[tuple[float, int]]) -> float:
        frames = sum(n for _, n in pairs)
        return sum(e for e, _ in pairs) / frames if frames else float("nan")

    var = np.square(model.expression_std)
    summary = {
        "clips": len(rows),
        "train_clips": len(train_rows),
        "train_frames": int(sum(np.isfinite(c).all(axis=(1, 2)).sum() for c in train)),
        "n_effective": model.n_effective,
        "recon_nme_train": mean_nme(train_err),
        "recon_nme_heldout": mean_nme(held_err),
        "var_share_lip": float(var[list(split.lip)].sum() / max(var.sum(), 1e-30)),
        "var_share_eye": float(var[list(split.eye)].sum() / max(var.sum(), 1e-30)),
        "lip_score_mean": float(np.mean([split.scores["lip"][i] for i in split.lip])),
        "eye_score_mean": float(np.mean([split.scores["eye"][i] for i in split.eye])),
        "seconds": time.perf_counter() - start,
    }
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=2))
    with tracking.start_run(cfg.mlflow, cfg, tags={"stage": "fit"}) as run_log:
        run_log.log_params({"data": data, "out": out})
        run_log.log_metrics(summary)
        run_log.log_figure(figure, SCORES_PNG)
        for name in (MORPHABLE, REGIONS, SCORES_JSON, "summary.json"):
            run_log.log_bytes(name, storage.read_bytes(storage.join(out, name)))
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
