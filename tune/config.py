"""Config of ``disenttalk sweep``: the searched keys, the scheduler, a trial's resources, the
objective, the champion rule and the report (``configs/sweep.yaml``, presets ``configs/sweep_<preset>.yaml``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from disenttalk.config import StrictConfig
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

    def first(self) -> Any:
        """A value it can take: the first listed, or the low end of a range (to probe the key)."""
        values = self.values()
        return values[0] if values else (self.uniform or self.loguniform)[0]

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
