"""How tune-sampler picks a setting from its grid."""

from __future__ import annotations

import math

import pytest


def test_choose_prefers_true_blink_rate_among_near_best_lip_error():
    from tune.sampler import choose

    rows = [
        {"eta": 0.0, "lmd": 0.020, "blink_error": 0.6},
        {"eta": 0.3, "lmd": 0.0205, "blink_error": 0.05},  # within 5 % of the best lmd: wins
        {"eta": 0.6, "lmd": 0.030, "blink_error": 0.0},  # perfect blinks, lips too far off
        {"eta": 0.9, "lmd": math.nan, "blink_error": 0.0},  # failed scores never win
    ]
    assert choose(rows, 0.05)["eta"] == 0.3
    assert choose(rows, 0.0)["eta"] == 0.0  # no tolerance: best lips only
    assert choose(rows, 1.0)["eta"] == 0.6
    with pytest.raises(ValueError, match="no sampler setting"):
        choose([{"lmd": math.nan, "blink_error": 0.0}], 0.05)


def test_lips_are_chosen_on_lip_error_alone():
    from tune.sampler import best_lips

    rows = [
        {"guidance": 1.0, "lmd": 0.021, "blink_error": 0.0},
        {"guidance": 1.5, "lmd": 0.020, "blink_error": 0.9},  # worst blinks, best lips: wins
        {"guidance": 2.0, "lmd": math.nan, "blink_error": 0.0},  # a failed score never wins
    ]
    assert best_lips(rows)["guidance"] == 1.5
    with pytest.raises(ValueError, match="finite lip error"):
        best_lips([{"guidance": 1.0, "lmd": math.nan}])
