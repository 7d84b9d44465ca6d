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
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import typer
from pydantic import Field, model_validator

from disenttalk.config import StrictConfig
from workflows.common import user_errors
from workflows.platform import storage
from workflows.platform.raycluster import RayConfig
from workflows.platform.tracking import MlflowConfig

REGION_KEYS = ("k_lip", "k_eye", "regions")
INFERENCE_KEYS = ("guidance", "eta")
ALIASES = {"sync_weight": "train.sync_weight"}  # λ (Eq. 10)
METRIC = "val_lip_error"  # what ASHA compares between trials


class Param(StrictConfig):
    """One searched key: exactly one of a grid, a choice, or a range."""

    grid: list[Any] | None = None  # every value (grid search)
    choice: list[Any] | None = None  # sampled (random / optuna)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None  # [low, high] inclusive

    @model_validator(mode="after")
    def _one(self) -> Param:
        given = [k for k in ("grid", "choice", "uniform", "loguniform", "randint") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of grid / choice / uniform / loguniform / randint, got {given}")
        return self

    def values(self) -> list[Any] | None:
        """Every value it can take, where that is a finite list."""
        if self.grid is not None or self.choice is not None:
            return list(self.grid if self.grid is not None else self.choice)
        if self.randint is not None:
            return list(range(self.randint[0], self.randint[1] + 1))
        return None

    def domain(self) -> Any:
        """The Ray Tune search-space object."""
        from ray import tune

        if self.grid is not None:
            return tune.grid_search(list(self.grid))
        if self.choice is not None:
            return tune.choice(list(self.choice))
        if self.uniform is not None:
            return tune.uniform(*self.uniform)
        if self.loguniform is not None:
            return tune.loguniform(*self.loguniform)
        return tune.randint(self.randint[0], self.randint[1] + 1)


class SchedulerSection(StrictConfig):
    """Early stopping on ``val_lip_error`` at denoiser checkpoints."""

    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, gt=0)  # checkpoints a trial always gets
    reduction_factor: float = Field(2.0, gt=1)


class TrialSection(StrictConfig):
    """Ray Train scaling of one trial."""

    num_workers: int = Field(1, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    gpus_per_worker: float = Field(1.0, ge=0)


class ObjectiveSection(StrictConfig):
    """How a trained trial is scored and which one wins (see the module docstring)."""

    split: str = "val"
    max_clips: int = Field(8, gt=0)
    max_blink_error: float = Field(0.5, ge=0)  # |rate / truth − 1|
    min_sync_ratio: float = Field(0.5, ge=0)  # sync confidence ≥ this × the truth's
    seed: int = 0


class ChampionSection(StrictConfig):
    """Registering the best trial and moving the ``champion`` alias."""

    enabled: bool = True  # register the best trial's bundle (and maybe move the alias)
    test_split: str = "test"
    # relative val-LMD gain needed to move the alias: above the spread of identical runs
    margin: float = Field(0.07, ge=0)


class InferenceVariant(StrictConfig):
    """A trained trial sampled with other settings, as its own row of the report."""

    trial: str  # the variant name of a trained trial
    guidance: float | None = None
    eta: float | None = None


class ReportSection(StrictConfig):
    """The paper's metrics of every trained trial on these splits (the ablation table)."""

    splits: tuple[str, ...] = ()
    max_clips_per_split: int = Field(12, gt=0)
    inference_variants: dict[str, InferenceVariant] = {}


class SweepConfig(StrictConfig):
    """Config of ``disenttalk sweep`` (``configs/sweep.yaml``, presets ``configs/sweep_<preset>.yaml``)."""

    name: str = "disenttalk-sweep"  # Tune experiment: same name + storage = resume
    space: dict[str, Param] = {}
    variants: dict[str, dict[str, Any]] = {}  # named points instead of a space (ablations)
    inference: dict[str, list[float]] = {"guidance": [2.0]}
    search: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int = Field(1, gt=0)  # per grid point (grid) or in all (random, optuna)
    max_concurrent_trials: int = Field(2, gt=0)
    seed: int = 0
    train: list[str] = []  # --set overrides of the train stage for every trial
    scheduler: SchedulerSection = SchedulerSection()
    trial: TrialSection = TrialSection()
    objective: ObjectiveSection = ObjectiveSection()
    champion: ChampionSection = ChampionSection()
    report: ReportSection = ReportSection()
    evaluator_steps: int | None = Field(None, gt=0)  # the sync evaluator's training steps (evaluate's default)
    storage_path: str | None = None  # Tune results (local or s3://); None = <out>/tune
    # the dashboard's State API lets Ray Train free an early-stopped trial's workers
    ray: RayConfig = RayConfig(include_dashboard=True)
    mlflow: MlflowConfig = MlflowConfig(experiment="disenttalk-sweep")

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if self.space and self.variants:
            raise ValueError("give either a search space or named variants, not both")
        if not (self.space or self.variants):
            raise ValueError("nothing to search: give `space` or `variants`")
        unknown = set(self.inference) - set(INFERENCE_KEYS)
        if unknown:
            raise ValueError(f"inference: unknown keys {sorted(unknown)}; searched at inference: {INFERENCE_KEYS}")
        if any(k in INFERENCE_KEYS for k in self.space):
            raise ValueError("guidance / eta are searched at inference: list them under `inference`")
        for name, v in self.report.inference_variants.items():
            if self.variants and v.trial not in self.variants:
                raise ValueError(f"report.inference_variants.{name}: no variant {v.trial!r}")
        return self


# -- trial settings -----------------------------------------------------------------------------


def train_overrides(params: dict[str, Any]) -> list[str]:
    """``--set`` overrides of the train stage for a trial's searched keys (region keys excluded)."""
    out = []
    for key, value in params.items():
        if key in REGION_KEYS or key in INFERENCE_KEYS:
            continue
        out.append(f"{ALIASES.get(key, key)}={json.dumps(value)}")
    return out


def trial_split(fitted: Any, params: dict[str, Any]) -> Any:
    """The region split of a trial: the fit's, re-selected for its K_lip / K_eye, or one region."""
    from disenttalk.face.regions import RegionSplit

    if params.get("regions", "fitted") == "single":
        return RegionSplit.single(fitted.num_dims)
    k_lip = int(params.get("k_lip", len(fitted.lip)))
    k_eye = int(params.get("k_eye", len(fitted.eye)))
    if (k_lip, k_eye) == (len(fitted.lip), len(fitted.eye)):
        return fitted
    return fitted.reselect(k_lip, k_eye)


def points(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every (K_lip, K_eye, regions) combination the sweep can produce (ranges: both ends)."""
    if cfg.variants:
        return [dict(v) for v in cfg.variants.values()]
    axes = {}
    for key in REGION_KEYS:
        if key in cfg.space:
            values = cfg.space[key].values()
            if values is None:
                raise ValueError(f"space.{key}: give a grid, a choice or randint (integer values)")
            axes[key] = values
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


def check_space(cfg: SweepConfig, fitted: Any) -> None:
    """Refuse K values the fitted model cannot give, and unknown train keys, before any trial runs."""
    from disenttalk.face.regions import check_sizes
    from workflows.train.config import load_stage_config

    for point in points(cfg):
        regions = point.get("regions", "fitted")
        if regions not in ("fitted", "single"):
            raise ValueError(f"regions: {regions!r} is not one of fitted, single")
        if regions == "single":
            continue
        k_lip = int(point.get("k_lip", len(fitted.lip)))
        k_eye = int(point.get("k_eye", len(fitted.eye)))
        try:
            check_sizes(fitted.num_dims, k_lip, k_eye)
        except ValueError as exc:
            raise ValueError(f"search point {point}: {exc}") from None
    probe = list(cfg.variants.values()) or [{k: _first(p) for k, p in cfg.space.items()}]
    for params in probe:  # every other key must be a valid train-stage override
        load_stage_config(None, [*cfg.train, *train_overrides(params)])


def _first(p: Param) -> Any:
    values = p.values()
    return values[0] if values else (p.uniform or p.loguniform)[0]


def param_space(cfg: SweepConfig) -> dict[str, Any]:
    """Tune's param space: the searched keys (or the variant name)."""
    from ray import tune

    if cfg.variants:
        return {"variant": tune.grid_search(list(cfg.variants))}
    if cfg.search == "optuna":  # Optuna samples its own space
        return {}
    return {key: p.domain() for key, p in cfg.space.items()}


def searcher(cfg: SweepConfig) -> Any:
    """The Tune search algorithm (None: Tune's grid / random variant generator)."""
    if cfg.search != "optuna" or cfg.variants:
        return None
    try:
        from ray.tune.search.optuna import OptunaSearch
    except ImportError as exc:  # optuna is optional
        raise ValueError(f"search: optuna needs the optuna package ({exc})") from None
    from ray import tune

    space = {}
    for key, p in cfg.space.items():
        if p.grid is not None:
            raise ValueError(f"space.{key}: optuna samples; use choice instead of grid")
        space[key] = p.domain()
    return OptunaSearch(space=space, metric=METRIC, mode="min", seed=cfg.seed) if space else tune.search.BasicVariantGenerator()


def trial_params(config: dict[str, Any], variants: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """(label, searched params) of a trial's Tune config."""
    if "variant" in config:
        return str(config["variant"]), dict(variants[config["variant"]])
    params = {k: v for k, v in config.items() if not k.startswith("_")}
    return ",".join(f"{k}={_short(v)}" for k, v in sorted(params.items())), params


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_id(params: dict[str, Any]) -> str:
    """A folder name for a trial's params: the same on a restart, different for other params."""
    text = json.dumps(params, sort_keys=True, default=str)
    return "t-" + hashlib.sha256(text.encode()).hexdigest()[:10]


# -- scoring ---------------------------------------------------------------------------------------


def scoring_config(cfg: SweepConfig, **over: Any) -> Any:
    """The evaluate settings a sweep scores with (no baselines, no fidelity pass, one blink sample)."""
    from workflows.evaluate import EvaluateConfig

    base = EvaluateConfig(fidelity=False, baselines=False, blink_samples=1, seed=cfg.objective.seed)
    if cfg.evaluator_steps:
        base = base.with_overrides([f"evaluator.steps={cfg.evaluator_steps}"])
    return base.model_copy(update=over)


def split_scores(results: list[dict], rows: list[dict]) -> dict[str, float]:
    """Model metrics over ``rows`` (evaluate's NaN-aware means) with the truth's blink rate and
    sync confidence, and the two constraint ratios."""
    from workflows.evaluate import SYSTEM, aggregate

    table = aggregate(results, {"rows": rows})
    model, truth = table[SYSTEM]["rows"], table["truth"]["rows"]
    out = {m: model[m] for m in ("lmd", "blink_rate", "sync_conf", "cpbd", "lmd_decoded", "blink_duration",
                                 "landmark_change", "n_clips")}
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


def inference_grid(inference: dict[str, list[float]]) -> list[dict[str, float]]:
    """Every combination of the inference-time values (guidance × eta)."""
    keys = [k for k in INFERENCE_KEYS if k in inference]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(inference[k] for k in keys))]


def score_bundle(bundle: str, data: str, rows: list[dict], expert_dir: str, info: dict, cfg: SweepConfig,
                 desc: str, **over: Any) -> tuple[dict[str, float], list[dict]]:
    """Render, re-track and score ``bundle`` on ``rows``: (model metrics, per-clip results)."""
    from workflows.evaluate import score_clips

    results = score_clips(rows, data, bundle, expert_dir, scoring_config(cfg, **over), info, desc=desc)
    return split_scores(results, rows), results


def write_meta(bundle: str, **fields: Any) -> None:
    """Set ``fields`` in a bundle's meta.json (local folder or s3://)."""
    from disenttalk.bundle import update_meta

    if not storage.is_s3(bundle):
        update_meta(bundle, **fields)
        return
    uri = storage.join(bundle, "meta.json")
    meta = {**json.loads(storage.read_text(uri)), **fields}
    storage.write_text(uri, json.dumps(meta, indent=2, sort_keys=True, default=str))


# -- the trial -------------------------------------------------------------------------------------


def _report_callback() -> Any:
    """A Ray Train callback passing denoiser-phase reports on to Tune (sync-phase ones have no
    lip metric for the scheduler to compare)."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class DenoiserReports(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and metrics[0].get("phase") == "denoiser":
                super().after_report(run_context, metrics, checkpoint)

    return DenoiserReports()


def run_trial(config: dict[str, Any], sweep: dict[str, Any]) -> None:
    """One trial: train with the trial's split and keys, then choose its inference settings on the
    objective split and report the scores (Tune function trainable; ``sweep`` is what every
    trial shares, put in the object store by ``tune.with_parameters``)."""
    from ray import tune

    from workflows import fit as fit_stage
    from workflows.train import load_stage_config
    from workflows.train import run as train_run

    ctx = sweep
    cfg = SweepConfig.from_json(ctx["config"])
    label, params = trial_params(config, cfg.variants)
    tid = trial_id(params)
    out = storage.join(ctx["root"], "trials", tid)
    storage.makedirs(out)
    starts = storage.join(out, "starts.log")  # one line per (re)start of this trial
    previous = storage.read_text(starts) if storage.exists(starts) else ""
    storage.write_text(starts, previous + f"{time.time():.0f}\n")

    split = trial_split(fit_stage.read_split(ctx["fit"]), params)
    stage = load_stage_config(None, [
        *cfg.train, *train_overrides(params),
        f"scaling.num_workers={cfg.trial.num_workers}", f"scaling.cpus_per_worker={cfg.trial.cpus_per_worker}",
        f"scaling.use_gpu={str(cfg.trial.use_gpu).lower()}", f"scaling.gpus_per_worker={cfg.trial.gpus_per_worker}",
        f"run.name={tid}", f"run.storage_path={storage.join(out, 'ray')}", "ray.progress_bars=false",
        f"mlflow.enabled={str(cfg.mlflow.enabled).lower()}", f"mlflow.experiment={cfg.mlflow.experiment}",
        f"mlflow.run_name={label}",
        *([f"mlflow.parent_run_id={ctx['parent_run_id']}"] if ctx.get("parent_run_id") else []),
    ])
    summary = train_run(ctx["data"], ctx["fit"], out, stage, split=split, callbacks=[_report_callback()])
    bundle = summary["bundle"]

    rows, info = ctx["rows"], ctx["info"]
    table = []
    for setting in inference_grid(variant_inference(cfg, label)):
        scores, _ = score_bundle(bundle, ctx["data"], rows, ctx["expert_dir"], info, cfg,
                                 desc=f"{label} {setting}", **setting)
        table.append({**setting, **scores})
    best = min(table, key=lambda r: rank_key(r, cfg.objective))
    chosen = {k: best[k] for k in INFERENCE_KEYS if k in best}
    write_meta(bundle, **chosen, sweep={"trial": label, "params": params, "objective_split": cfg.objective.split,
                                        "inference_search": table})
    final = {f"objective/{k}": v for k, v in best.items() if k not in INFERENCE_KEYS}
    if summary.get("mlflow_run_id") and cfg.mlflow.enabled:
        from mlflow import MlflowClient

        from workflows.platform import tracking

        client = MlflowClient(tracking_uri=tracking.tracking_uri())  # the store the training run logged to
        run_id = summary["mlflow_run_id"]
        for key, value in {**final, **{f"chosen/{k}": v for k, v in chosen.items()}}.items():
            if isinstance(value, float) and math.isfinite(value):
                client.log_metric(run_id, key.replace("/", "."), value)
        client.set_tag(run_id, "stop_reason", "completed")
        client.set_tag(run_id, "sweep.trial", label)
    last = summary["final"]
    tune.report({METRIC: last.get(METRIC, math.nan), "phase": "scored", "step": last.get("step"),
                 "mlflow_run_id": summary.get("mlflow_run_id"), "bundle": bundle, "trial_id": tid,
                 "feasible": feasible(best, cfg.objective), **chosen, **final,
                 "inference_table": json.dumps(table)})


def variant_inference(cfg: SweepConfig, label: str) -> dict[str, list[float]]:
    """The inference-time values searched for a trial (a variant may pin its own)."""
    own = cfg.variants.get(label, {}) if cfg.variants else {}
    return {**cfg.inference, **{k: [own[k]] for k in INFERENCE_KEYS if k in own}}


# -- the driver ------------------------------------------------------------------------------------


def objective_rows(data: str, split: str, max_clips: int) -> list[dict]:
    """Up to ``max_clips`` clips of ``split``, shared round-robin across its languages (as evaluate)."""
    from workflows.evaluate import EvaluateConfig, select_clips
    from workflows.platform import clipstore

    groups = select_clips(clipstore.read_index(data),
                          EvaluateConfig(splits=(split,), per_language=(), max_clips_per_split=max_clips))
    return groups[split]


def evaluator_basis(data: str, fit: str, folder: Path) -> Path:
    """The files the shared sync evaluator is built on: the fit's morphable model and split, and
    the training split's normalisation (what every trial's bundle is normalised with)."""
    from workflows import fit as fit_stage
    from workflows.train import data as train_data

    folder.mkdir(parents=True, exist_ok=True)
    for name in (fit_stage.MORPHABLE, fit_stage.REGIONS):
        (folder / name).write_bytes(storage.read_bytes(storage.join(fit, name)))
    norm = train_data.norm_stats(data, fit, train_data.clip_rows(data, fit, "train"))
    np.savez(folder / "norm.npz", **norm)
    return folder


def _status(result: Any) -> tuple[str, dict[str, Any]]:
    """(stop reason, last metrics) of a finished Tune trial."""
    metrics = dict(result.metrics or {})
    if result.error is not None:
        return f"error: {str(result.error).strip().splitlines()[-1][:200]}", metrics
    if metrics.get("phase") == "scored":
        return "completed", metrics
    return f"stopped early by ASHA at denoiser step {metrics.get('step', '?')}", metrics


def trial_table(results: list[Any], cfg: SweepConfig) -> list[dict[str, Any]]:
    """One row per trial: label, params, stop reason, last val_lip_error, objective scores."""
    rows = []
    for result in results:
        reason, m = _status(result)
        label, params = trial_params(result.config, cfg.variants)
        row = {"trial": label, **{f"param/{k}": v for k, v in params.items()}, "status": reason,
               "steps": m.get("step"), METRIC: m.get(METRIC, math.nan),
               **{k: m[k] for k in INFERENCE_KEYS if k in m},
               **{k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("objective/")},
               "feasible": m.get("feasible"), "bundle": m.get("bundle"), "mlflow_run_id": m.get("mlflow_run_id")}
        rows.append(row)
    return sorted(rows, key=lambda r: (r["status"] != "completed",
                                       rank_key({"lmd": r.get("lmd", math.nan),
                                                 "blink_error": r.get("blink_error", math.nan),
                                                 "sync_ratio": r.get("sync_ratio", math.nan)}, cfg.objective)))


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A markdown table of ``rows`` (numbers to 4 significant digits)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if not math.isfinite(v) else f"{v:.4g}"
        return "–" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def objective_figure(rows: list[dict[str, Any]]):
    """The objective (val LMD of completed trials) and the last val_lip_error (every trial) against
    each searched key; stopped trials as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    keys = sorted({k for r in rows for k in r if k.startswith("param/")}) or ["trial"]
    fig = Figure(figsize=(4 * len(keys), 6), layout="constrained")
    axes = fig.subplots(2, len(keys), squeeze=False)
    for j, key in enumerate(keys):
        labels = sorted({str(r.get(key)) for r in rows})
        pos = {v: i for i, v in enumerate(labels)}
        for r in rows:
            x = r.get(key)
            x = float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else pos[str(x)]
            done = r["status"] == "completed"
            axes[0, j].scatter(x, r.get("lmd", math.nan) if done else math.nan, c="tab:blue")
            axes[1, j].scatter(x, r.get(METRIC, math.nan), c="tab:blue" if done else "tab:red",
                               marker="o" if done else "x")
        if not all(isinstance(r.get(key), (int, float)) for r in rows):
            for ax in axes[:, j]:
                ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
        axes[0, j].set_ylabel("objective: val LMD (rendered)")
        axes[1, j].set_ylabel(f"last {METRIC} (x: stopped)")
        axes[1, j].set_xlabel(key.removeprefix("param/"))
    return fig


def report_table(trained: list[dict[str, Any]], cfg: SweepConfig, data: str, expert_dir: str,
                 info: dict) -> list[dict[str, Any]]:
    """The paper's metrics (LMD, blink rate, sync confidence, CPBD) on ``report.splits`` for every
    completed trial and every inference variant."""
    from workflows.evaluate import EvaluateConfig, select_clips
    from workflows.platform import clipstore

    groups = select_clips(clipstore.read_index(data), EvaluateConfig(
        splits=cfg.report.splits, per_language=(), max_clips_per_split=cfg.report.max_clips_per_split))
    rows_all = [r for split in cfg.report.splits for r in groups[split]]
    entries = [(r["trial"], r["bundle"], {}) for r in trained]
    by_label = {r["trial"]: r for r in trained}
    for name, v in cfg.report.inference_variants.items():
        if v.trial in by_label:
            over = {k: getattr(v, k) for k in INFERENCE_KEYS if getattr(v, k) is not None}
            entries.append((name, by_label[v.trial]["bundle"], over))
    table = []
    for name, bundle, over in entries:
        _, results = score_bundle(bundle, data, rows_all, expert_dir, info, cfg, desc=f"report {name}", **over)
        row: dict[str, Any] = {"system": name}
        for split in cfg.report.splits:
            s = split_scores(results, groups[split])
            row.update({f"{split}/{k}": s[k] for k in ("lmd", "blink_rate", "truth_blink_rate", "sync_conf",
                                                       "truth_sync_conf", "cpbd", "n_clips")})
        table.append(row)
    return table


def _champion(work: Path) -> str | None:
    """A local copy of the registry's current champion bundle, or None when there is none."""
    from workflows.common import UserError
    from workflows.register import CHAMPION, MODEL_NAME, resolve_bundle

    try:
        return str(resolve_bundle(f"models:/{MODEL_NAME}@{CHAMPION}", work / "champion"))
    except (UserError, FileNotFoundError):
        return None


def promote_best(best: dict[str, Any], cfg: SweepConfig, data: str, rows: list[dict], expert_dir: str,
                 info: dict, work: Path) -> dict[str, Any]:
    """Score the best trial and the champion on the objective and test splits with the same
    clips, seeds and evaluator; register the best; move ``champion`` by the margin rule."""
    from workflows.register import register

    test_rows = objective_rows(data, cfg.champion.test_split, cfg.objective.max_clips)
    best_val = {k: best[k] for k in ("lmd", "blink_rate", "sync_conf", "blink_error", "sync_ratio")}
    best_test, _ = score_bundle(best["bundle"], data, test_rows, expert_dir, info, cfg, desc="best on test")
    champion = _champion(work)
    champ_val = champ_test = None
    if champion is not None:
        champ_val, _ = score_bundle(champion, data, rows, expert_dir, info, cfg, desc="champion on val")
        champ_test, _ = score_bundle(champion, data, test_rows, expert_dir, info, cfg, desc="champion on test")
    threshold = None if champ_val is None else champ_val["lmd"] * (1.0 - cfg.champion.margin)
    promote = champ_val is None or (math.isfinite(best_val["lmd"]) and best_val["lmd"] < threshold)
    local = best["bundle"]
    registered = register(local, {cfg.objective.split: best_val, cfg.champion.test_split: best_test},
                          metric=f"{cfg.objective.split}/lmd", mode="min", promote=promote)
    return {"registered_version": registered["version"], "champion_moved": registered["champion"],
            "previous_champion": registered["previous_champion"], "margin": cfg.champion.margin,
            "threshold_val_lmd": threshold,
            "best": {"val": best_val, "test": best_test},
            "champion": None if champ_val is None else {"val": champ_val, "test": champ_test}}


def run(cfg: SweepConfig, data: str, fit: str, out: str, corpus: str | None = None) -> dict[str, Any]:
    """Run (or resume) the sweep; writes the trial table, plots and report under ``out``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from workflows import fit as fit_stage
    from workflows.common import format_summary
    from workflows.evaluate import corpus_info, evaluator_dir
    from workflows.platform import tracking
    from workflows.platform.raycluster import init_ray, shutdown_if_started
    from workflows.train import load_stage_config

    tic = time.perf_counter()
    data, fit, out = (u if storage.is_s3(u) else str(Path(u).expanduser().resolve()) for u in (data, fit, out))
    fitted = fit_stage.read_split(fit)
    check_space(cfg, fitted)  # refuse before anything runs
    rows = objective_rows(data, cfg.objective.split, cfg.objective.max_clips)
    if not rows:
        raise ValueError(f"{data}: no clips in split {cfg.objective.split!r} to score trials on")
    info = corpus_info(corpus)
    storage.makedirs(out)
    work = Path(out) / "work" if not storage.is_s3(out) else Path(tempfile.mkdtemp(prefix="sweep-"))
    stage = load_stage_config(None, cfg.train)
    reports = -(-stage.train.denoiser_steps // stage.run.checkpoint_every) + 1  # + the scored report
    storage_path = cfg.storage_path or storage.join(out, "tune")
    state_uri = storage.join(out, "sweep.json")
    state = json.loads(storage.read_text(state_uri)) if storage.exists(state_uri) else {}

    started = init_ray(cfg.ray)
    try:
        expert_dir = evaluator_dir(data, out, evaluator_basis(data, fit, work / "basis"),
                                   scoring_config(cfg), work)
        client = None
        if cfg.mlflow.enabled:  # the sweep's run, through the client: registering uses the fluent API
            from mlflow import MlflowClient

            experiment_id = tracking.setup(cfg.mlflow.experiment)
            client = MlflowClient()
            if state.get("parent_run_id"):
                client.update_run(state["parent_run_id"], status="RUNNING")
            else:
                parent = client.create_run(experiment_id, run_name=cfg.name, tags={
                    "stage": "sweep", "data": data, "fit": fit, "out": out})
                state["parent_run_id"] = parent.info.run_id
                for key, value in tracking.config_params(cfg).items():
                    client.log_param(state["parent_run_id"], key, value)
        storage.write_text(state_uri, json.dumps(state, indent=2))
        shared = {"config": cfg.to_json(), "data": data, "fit": fit, "root": out, "rows": rows,
                  "info": info, "expert_dir": str(expert_dir), "parent_run_id": state.get("parent_run_id")}
        # The trial function itself only waits on its Ray Train run and Ray tasks, which reserve
        # their own CPUs; it reserves a token share so that Tune accepts the request.
        trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=shared), {"cpu": 0.01})
        fs = storage.s3_filesystem() if storage.is_s3(storage_path) else None
        path = storage.join(storage_path, cfg.name)
        restored = tune.Tuner.can_restore(storage.filesystem(path)[1] if fs else path, storage_filesystem=fs)
        if restored:
            typer.echo(f"sweep: resuming {path} (finished trials are kept)")
            tuner = tune.Tuner.restore(storage.filesystem(path)[1] if fs else path, trainable,
                                       resume_unfinished=True, resume_errored=True, storage_filesystem=fs)
        else:
            scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=reports,
                                       grace_period=cfg.scheduler.grace_period,
                                       reduction_factor=cfg.scheduler.reduction_factor)
                         if cfg.scheduler.type == "asha" else FIFOScheduler())
            tuner = tune.Tuner(
                trainable, param_space=param_space(cfg),
                tune_config=tune.TuneConfig(metric=METRIC, mode="min", scheduler=scheduler,
                                            search_alg=searcher(cfg), num_samples=cfg.num_samples,
                                            max_concurrent_trials=cfg.max_concurrent_trials),
                run_config=tune.RunConfig(name=cfg.name, storage_path=storage.filesystem(storage_path)[1] if fs
                                          else storage_path, storage_filesystem=fs, verbose=1,
                                          failure_config=tune.FailureConfig(max_failures=0)),
            )
        results = list(tuner.fit())
        rows_table = trial_table(results, cfg)
        _close_trial_runs(rows_table, cfg)
        completed = [r for r in rows_table if r["status"] == "completed"]
        best = completed[0] if completed else None
        outcome: dict[str, Any] = {"trials": len(rows_table), "completed": len(completed),
                                   "stopped_early": sum(r["status"].startswith("stopped") for r in rows_table),
                                   "failed": sum(r["status"].startswith("error") for r in rows_table)}
        if best is not None:
            outcome["best"] = {k: best[k] for k in best if k.startswith("param/") or k in (
                "trial", "lmd", "blink_rate", "truth_blink_rate", "sync_conf", "truth_sync_conf", *INFERENCE_KEYS)}
            if cfg.champion.enabled:
                outcome["champion"] = promote_best(best, cfg, data, rows, str(expert_dir), info, work)
        report = report_table(completed, cfg, data, str(expert_dir), info) if cfg.report.splits else []
        _write_outputs(out, rows_table, report, outcome, cfg)
        if client is not None:
            _log_parent(client, state["parent_run_id"], out, outcome, report)
            client.set_terminated(state["parent_run_id"], "FINISHED")
        outcome["seconds"] = round(time.perf_counter() - tic, 1)
        typer.echo(format_summary(f"sweep → {out}", {k: v for k, v in outcome.items() if k != "champion"}))
        if "champion" in outcome:
            c = outcome["champion"]
            typer.echo(f"registered version {c['registered_version']}; champion "
                       f"{'moved to it' if c['champion_moved'] else 'kept'} (val LMD best "
                       f"{c['best']['val']['lmd']:.4f} vs champion "
                       f"{'–' if c['champion'] is None else format(c['champion']['val']['lmd'], '.4f')}, "
                       f"margin {c['margin']:.0%})")
        return {"table": rows_table, "report": report, **outcome, "parent_run_id": state.get("parent_run_id")}
    finally:
        shutdown_if_started(started)


TABLE_COLUMNS = ["trial", "status", "steps", METRIC, "guidance", "lmd", "blink_rate", "truth_blink_rate",
                 "sync_conf", "truth_sync_conf", "feasible"]


def _write_outputs(out: str, table: list[dict], report: list[dict], outcome: dict, cfg: SweepConfig) -> None:
    import csv
    import io

    keys = list(dict.fromkeys(k for r in table for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(table)
    storage.write_text(storage.join(out, "trials.csv"), buf.getvalue())
    params = sorted({k for r in table for k in r if k.startswith("param/")})
    storage.write_text(storage.join(out, "trials.md"), markdown_table(table, [TABLE_COLUMNS[0], *params,
                                                                             *TABLE_COLUMNS[1:]]))
    fig = objective_figure(table)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    storage.write_bytes(storage.join(out, "objective.png"), png.getvalue())
    if report:
        columns = ["system", *[c for c in report[0] if c != "system"]]
        storage.write_text(storage.join(out, "report.md"), markdown_table(report, columns))
    storage.write_text(storage.join(out, "outcome.json"),
                       json.dumps({"outcome": outcome, "report": report}, indent=2, default=str))


def _log_parent(client: Any, run_id: str, out: str, outcome: dict, report: list[dict]) -> None:
    from workflows.register import flat_metrics

    for name in ("trials.csv", "trials.md", "objective.png", "outcome.json", *(["report.md"] if report else [])):
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, name).write_bytes(storage.read_bytes(storage.join(out, name)))
            client.log_artifact(run_id, str(Path(tmp, name)))
    numbers = flat_metrics({k: outcome[k] for k in ("trials", "completed", "stopped_early", "failed")})
    champion = outcome.get("champion")
    if champion:
        numbers |= {f"best.{k.replace('/', '.')}": v for k, v in flat_metrics(champion["best"]).items()}
        if champion["champion"]:
            numbers |= {f"champion.{k.replace('/', '.')}": v for k, v in flat_metrics(champion["champion"]).items()}
        client.set_tag(run_id, "registered_version", champion["registered_version"])
        client.set_tag(run_id, "champion_moved", str(champion["champion_moved"]))
    for row in report:
        numbers |= {f"report.{row['system']}.{k.replace('/', '.')}": v for k, v in row.items()
                    if isinstance(v, float)}
    for key, value in numbers.items():
        if math.isfinite(value):
            client.log_metric(run_id, key, value)


def _close_trial_runs(table: list[dict], cfg: SweepConfig) -> None:
    """Trials' MLflow runs: the stop reason as a tag; runs of stopped trials marked KILLED."""
    if not cfg.mlflow.enabled:
        return
    from mlflow import MlflowClient

    from workflows.platform import tracking

    client = MlflowClient(tracking_uri=tracking.tracking_uri())
    for row in table:
        run_id = row.get("mlflow_run_id")
        if not run_id:
            continue
        client.set_tag(run_id, "stop_reason", row["status"])
        client.set_tag(run_id, "sweep.trial", row["trial"])
        if row["status"] != "completed" and client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")


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
    if not storage.exists(storage.join(fit, "regions.json")):
        raise typer.BadParameter(f"{fit}: no fit outputs (run `make demo` first, or give --data and --fit)")
    out = out or str(paths.home() / f"sweep-{preset or 'default'}")
    run(cfg, data, fit, out, corpus)


if __name__ == "__main__":  # Ray job entrypoint: python -m tune.sweep
    # through the package module, so that Tune pickles tune.sweep.run_trial by reference
    from tune.sweep import cli as sweep_cli

    typer.run(sweep_cli)
