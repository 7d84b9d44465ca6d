"""Registering a sweep's best trial and the champion rule: the ``champion`` alias moves to it only
if its objective-split LMD beats the registry's champion's (scored again here, on the same clips,
seeds and evaluator) by more than ``champion.margin`` (relative)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from disenttalk.constants import CHAMPION_URI
from tune.config import SweepConfig
from tune.scoring import Yardstick, objective_rows

BEST_KEYS = ("lmd", "blink_rate", "sync_conf", "blink_error", "sync_ratio")


def champion_bundle(work: Path) -> str | None:
    """A local copy of the registry's current champion bundle, or None when there is none."""
    from workflows.common import UserError
    from workflows.register import resolve_bundle

    try:
        return str(resolve_bundle(CHAMPION_URI, work / "champion"))
    except (UserError, FileNotFoundError):
        return None


def score_champion(champion: str | None, yardstick: Yardstick, rows: list[dict],
                   test_rows: list[dict]) -> tuple[dict[str, float] | None, dict[str, float] | None]:
    """The champion's scores on the objective and the test split ((None, None) without one)."""
    if champion is None:
        return None, None
    val, _ = yardstick.score(champion, rows, desc="champion on val")
    test, _ = yardstick.score(champion, test_rows, desc="champion on test")
    return val, test


def promote_best(best: dict[str, Any], cfg: SweepConfig, yardstick: Yardstick, rows: list[dict],
                 work: Path) -> dict[str, Any]:
    """Score the best trial and the champion on the objective and test splits with the same
    clips, seeds and evaluator; register the best; move ``champion`` by the margin rule."""
    from workflows.register import register

    test_rows = objective_rows(yardstick.data, cfg.champion.test_split, cfg.objective.max_clips)
    best_val = {k: best[k] for k in BEST_KEYS}
    best_test, _ = yardstick.score(best["bundle"], test_rows, desc="best on test")
    champ_val, champ_test = score_champion(champion_bundle(work), yardstick, rows, test_rows)
    threshold = None if champ_val is None else champ_val["lmd"] * (1.0 - cfg.champion.margin)
    promote = champ_val is None or (math.isfinite(best_val["lmd"]) and best_val["lmd"] < threshold)
    registered = register(best["bundle"], {cfg.objective.split: best_val, cfg.champion.test_split: best_test},
                          metric=f"{cfg.objective.split}/lmd", mode="min", promote=promote)
    return {"registered_version": registered["version"], "champion_moved": registered["champion"],
            "previous_champion": registered["previous_champion"], "margin": cfg.champion.margin,
            "threshold_val_lmd": threshold,
            "best": {"val": best_val, "test": best_test},
            "champion": None if champ_val is None else {"val": champ_val, "test": champ_test}}


def describe(champion: dict[str, Any]) -> str:
    """One line: the registered version, whether the alias moved, and the LMDs that decided it."""
    theirs = "–" if champion["champion"] is None else format(champion["champion"]["val"]["lmd"], ".4f")
    return (f"registered version {champion['registered_version']}; champion "
            f"{'moved to it' if champion['champion_moved'] else 'kept'} (val LMD best "
            f"{champion['best']['val']['lmd']:.4f} vs champion {theirs}, margin {champion['margin']:.0%})")
