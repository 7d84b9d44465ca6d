"""The corpus's resting expression: the median expression over the quietest frames."""

from __future__ import annotations

import numpy as np


def test_rest_expression_is_the_median_over_quiet_frames():
    from workflows.train.data import Clip, rest_expression

    t = 100
    audio = np.ones((t, 4), np.float32)
    audio[:20] = -3.0  # a pause: low log-mel energy
    expression = np.zeros((t, 3), np.float32)
    expression[:20] = [1.0, -2.0, 0.5]  # the face at rest, during the pause
    expression[20:] = np.random.default_rng(0).normal(size=(80, 3)) + 5.0  # speaking
    valid = np.ones(t, bool)
    valid[5] = False  # invalid frames are left out
    expression[5] = 99.0
    clip = Clip("c", expression, audio, valid)
    np.testing.assert_allclose(rest_expression([clip], quantile=0.15), [1.0, -2.0, 0.5])
    assert rest_expression([Clip("e", expression, audio, np.zeros(t, bool))]) is None
