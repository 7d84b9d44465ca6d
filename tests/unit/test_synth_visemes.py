"""Visemes, coarticulated mouth targets, blinks and head sway of the demo corpus."""

from __future__ import annotations

import numpy as np
import pytest

from disenttalk.synth import motion, visemes
from disenttalk.synth.visemes import VISEMES, mouth_targets, segments, viseme_sequence

OPEN, SPREAD, ROUND = 0, 1, 2


@pytest.mark.parametrize(
    ("ipa", "expected"),
    [
        ("p", ["closed"]), ("m", ["closed"]), ("ph", ["closed"]),  # Mandarin aspirated p
        ("f", ["labiodental"]), ("θ", ["dental"]), ("th", ["alveolar"]),
        ("tʃ", ["postalveolar"]), ("ts.h", ["postalveolar"]), ("w", ["w"]),
        ("ˈiː", ["i"]), ("uː", ["u"]), ("ˈɑː", ["a"]), ("ɔ", ["o"]), ("ə", ["schwa"]),
        ("aɪ", ["a", "i"]), ("ˈoʊ", ["o", "u"]), ("ˈiou", ["i", "o", "u"]),
    ],
)
def test_ipa_to_visemes(ipa, expected):
    assert viseme_sequence(ipa) == expected


def test_vowel_targets_follow_height_and_rounding():
    a, i, u, o = (VISEMES[n].target for n in ("a", "i", "u", "o"))
    assert a[OPEN] > o[OPEN] > i[OPEN]  # open > mid > close
    assert u[ROUND] > o[ROUND] > a[ROUND] and i[ROUND] == 0
    assert i[SPREAD] > a[SPREAD] > u[SPREAD]
    assert VISEMES["closed"].target[OPEN] == 0


def test_segments_cover_the_clip_with_rest_in_gaps():
    segs = segments([(0.5, 0.6, "m"), (0.6, 0.8, "aɪ"), (1.2, 1.3, "p")], duration_s=2.0)
    assert segs[0] == (0.0, 0.5, "rest") and segs[-1][1] == 2.0
    names = [n for _, _, n in segs]
    assert names == ["rest", "closed", "a", "i", "rest", "closed", "rest"]
    assert all(b[0] == pytest.approx(a[1]) for a, b in zip(segs, segs[1:], strict=False))


def test_silence_gives_a_still_closed_mouth():
    ph = [(1.0, 1.1, "h"), (1.1, 1.3, "ˈɑː"), (1.3, 1.4, "p")]
    times = visemes.frame_times(75, 25.0)  # 3 s
    m = mouth_targets(ph, times, 3.0)
    quiet = (times < 1.0 - visemes.SUPPORT_S) | (times > 1.4 + visemes.SUPPORT_S)
    assert np.all(m[quiet] == 0.0)
    assert m[:, OPEN].max() > 0.5  # the /ɑː/ opens the jaw


def test_bilabials_close_and_coarticulation_anticipates():
    # "a m a": the mouth closes for /m/; "a ... u": rounding starts before /u/ begins.
    times = np.arange(0.0, 1.5, 0.005)
    m = mouth_targets([(0.2, 0.45, "a"), (0.45, 0.55, "m"), (0.55, 0.8, "a")], times, 1.5)
    at_m = m[(times > 0.47) & (times < 0.53), OPEN]
    assert at_m.max() < 0.2 and m[(times > 0.2) & (times < 0.45), OPEN].max() > 0.8
    r = mouth_targets([(0.2, 0.5, "a"), (0.5, 0.8, "u")], times, 1.5)[:, ROUND]
    before = r[(times > 0.44) & (times < 0.5)]
    assert before.max() > 0.1  # lips round within ~70 ms before the /u/
    assert r[(times > 0.25) & (times < 0.3)].max() < 0.05


def test_mouth_targets_depend_smoothly_on_time():
    ph = [(0.3, 0.4, "s"), (0.4, 0.6, "ˈiː"), (0.6, 0.7, "z")]
    m = mouth_targets(ph, np.arange(0.0, 1.0, 0.001), 1.0)
    assert np.abs(np.diff(m, axis=0)).max() < 0.1  # no jumps at 1 ms steps
    assert m.min() >= 0.0 and m.max() <= 1.0


def test_blinks_have_physiological_statistics():
    rng = np.random.default_rng(0)
    blinks = motion.sample_blinks(3000.0, rng)
    rate = len(blinks) / 3000.0
    assert 0.25 < rate < 0.35
    lengths = blinks[:, 1] - blinks[:, 0]
    assert lengths.min() >= motion.BLINK_MIN_S and lengths.max() <= motion.BLINK_MAX_S
    gaps = blinks[1:, 0] - blinks[:-1, 1]
    assert gaps.min() >= motion.REFRACTORY_S
    assert np.std(gaps) > 0.5  # random intervals, not a metronome


def test_blinks_are_reproducible_and_inside_the_clip():
    a = motion.sample_blinks(10.0, np.random.default_rng(7))
    b = motion.sample_blinks(10.0, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.size == 0 or (a.min() >= 0.2 and a.max() <= 9.8)


def test_every_blink_shuts_the_eye_for_a_frame_and_opens_between():
    times = visemes.frame_times(100, 25.0)
    blinks = np.array([[0.5, 0.6], [2.0, 2.4]])  # shortest and longest
    c = motion.blink_closure(blinks, times, 25.0)
    for start, end in blinks:
        inside = c[(times >= start) & (times <= end)]
        assert inside.max() == 1.0 and (inside > 0.3).sum() >= 2
    outside = np.ones_like(times, dtype=bool)
    for start, end in blinks:
        outside &= (times < start) | (times > end)
    assert np.all(c[outside] == 0.0)


def test_head_sway_is_small_and_smooth():
    times = visemes.frame_times(250, 25.0)
    h = motion.head_sway(times, np.random.default_rng(1))
    assert np.abs(np.rad2deg(h[:, 0])).max() < 2.0
    assert np.abs(h[:, 1:3]).max() < 3.0 and np.abs(h[:, 3]).max() < 0.011
    assert np.abs(np.diff(h[:, 1])).max() < 0.5  # px per frame
    lm = np.random.default_rng(2).uniform(50, 200, size=(250, 478, 3))
    moved = motion.apply_similarity(lm, h, np.array([128.0, 128.0]))
    d = np.linalg.norm(lm[:, 0, :2] - lm[:, 1, :2], axis=-1)
    d2 = np.linalg.norm(moved[:, 0, :2] - moved[:, 1, :2], axis=-1)
    np.testing.assert_allclose(d2 / d, np.exp(h[:, 3]), rtol=1e-9)  # a similarity
