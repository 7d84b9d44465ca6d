"""The search space of a sweep: the region splits it can produce, Tune's param space and search
algorithm, each trial's label, params and folder name, and the inference-time grid."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

from tune.config import INFERENCE_KEYS, METRIC, REGION_KEYS, SweepConfig


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


def check_regions(cfg: SweepConfig, fitted: Any) -> None:
    """Refuse K values the fitted model cannot give, before any trial runs."""
    from disenttalk.face.regions import check_sizes

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


def probe_params(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Params that name every searched key once: each variant's, or one value of each key."""
    return list(cfg.variants.values()) or [{k: p.first() for k, p in cfg.space.items()}]


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


def inference_grid(inference: dict[str, list[float]]) -> list[dict[str, float]]:
    """Every combination of the inference-time values (guidance × eta)."""
    keys = [k for k in INFERENCE_KEYS if k in inference]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(inference[k] for k in keys))]


def variant_inference(cfg: SweepConfig, label: str) -> dict[str, list[float]]:
    """The inference-time values searched for a trial (a variant may pin its own)."""
    own = cfg.variants.get(label, {}) if cfg.variants else {}
    return {**cfg.inference, **{k: [own[k]] for k in INFERENCE_KEYS if k in own}}
