"""Audio augmentation: each transform's length, timing and level; seeding; the training side
(variants with the truth stretched to their tempo, the sampler drawing them)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import correlate

from disenttalk import augment as A

SR = 16000


def _speech_like(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Syllable-like bursts of noise with pauses between them (non-periodic: an unambiguous
    cross-correlation peak), peak well below full scale."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    envelope, t = np.zeros(n), 1600
    while t < n - 4000:
        length = int(rng.integers(1000, 4000))
        envelope[t : t + length] = np.hanning(length)
        t += length + int(rng.integers(800, 3000))
    return (0.2 * envelope * rng.standard_normal(n)).astype(np.float32)


def _lag(y: np.ndarray, x: np.ndarray) -> int:
    """Samples by which ``y`` lags ``x`` (the cross-correlation peak)."""
    m = min(len(x), len(y))
    c = correlate(y[:m].astype(np.float64), x[:m].astype(np.float64), mode="full", method="fft")
    return int(np.argmax(c)) - (m - 1)


def _envelope(x: np.ndarray, hop: int = 80) -> np.ndarray:
    m = len(x) // hop
    return np.sqrt((x[: m * hop].astype(np.float64).reshape(m, hop) ** 2).mean(1))


X = _speech_like()


@pytest.mark.parametrize("name", ["mp3", "aac", "opus"])
def test_codecs_keep_length_and_timing(name):
    y = A.codec(X, SR, name, 24)
    assert y.shape == X.shape and y.dtype == np.float32
    assert abs(_lag(y, X)) <= SR // 1000  # 0 ± 1 ms
    assert np.corrcoef(X, y)[0, 1] > 0.6  # lossy (noise-like input loses its highs), not broken


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "babble"])
def test_noise_hits_the_drawn_snr_over_the_active_part(kind):
    y = A.add_noise(X, SR, 12.5, kind, np.random.default_rng(1))
    assert y.shape == X.shape
    assert abs(A.snr_db(X, y - X, SR) - 12.5) < 0.5
    # the SNR is over speech, not the silences: over the whole clip it is lower
    whole = 10 * np.log10(np.mean(X.astype(np.float64) ** 2) / np.mean((y - X).astype(np.float64) ** 2))
    assert whole < 12.0
    assert np.array_equal(A.add_noise(np.zeros(800, np.float32), SR, 10, kind, np.random.default_rng(0)),
                          np.zeros(800, np.float32))  # nothing active: unchanged


def test_reverb_keeps_length_and_the_direct_sound_in_place():
    rir = A.room_impulse_response(SR, 0.8, 0.0, np.random.default_rng(0))
    assert int(np.argmax(np.abs(rir))) == 0 and len(rir) == int(0.8 * SR)
    y = A.reverberate(X, SR, 0.6, 3.0, np.random.default_rng(0))
    assert y.shape == X.shape and _lag(y, X) == 0
    np.testing.assert_allclose(np.sqrt(np.mean(y.astype(np.float64) ** 2)),
                               np.sqrt(np.mean(X.astype(np.float64) ** 2)), rtol=1e-4)


def test_telephone_band_has_no_energy_above_4_khz():
    # faded in and out: a clip cut off at full level would put a step at its ends
    fade = np.minimum(1.0, np.minimum(np.arange(SR), np.arange(SR)[::-1]) / 800)
    white = (np.random.default_rng(0).standard_normal(SR) * 0.1 * fade).astype(np.float32)
    y = A.telephone(white, SR)
    assert y.shape == white.shape
    power = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    assert power[freqs > 4000].sum() < 1e-8 * power.sum()  # below -80 dB
    assert power[freqs < 200].sum() < 1e-2 * power.sum()  # and little below the band
    band = (freqs > 500) & (freqs < 3000)  # the pass band keeps its level
    reference = np.abs(np.fft.rfft(white.astype(np.float64))) ** 2
    assert 0.8 < power[band].sum() / reference[band].sum() < 1.2
    assert _lag(A.telephone(X, SR), X) == 0


def test_gain_is_exact_in_db_and_clips_at_full_scale():
    quiet = X * np.float32(0.25 / np.abs(X).max())  # +12 dB stays below full scale
    for db in (-12.0, -3.5, 6.0, 11.9):
        y = A.apply_gain(quiet, db)
        mask = np.abs(quiet) > 1e-3
        np.testing.assert_allclose(20 * np.log10(np.abs(y[mask]) / np.abs(quiet[mask])), db, atol=1e-4)
    loud = np.array([0.6, -0.9, 0.1], np.float32)
    np.testing.assert_allclose(A.apply_gain(loud, 6.0), [1.0, -1.0, 0.1 * 10 ** 0.3], rtol=1e-5)


@pytest.mark.parametrize("factor", [0.9, 0.97, 1.1])
def test_tempo_length_and_timing(factor):
    y = A.change_tempo(X, SR, factor)
    assert abs(len(y) - len(X) / factor) <= SR // 25  # ± one 25 fps frame (it is exact here)
    # the envelope of the output is the input's envelope played factor × faster, no lead or lag
    ex, ey = _envelope(X), _envelope(y)
    stretched = np.interp(np.arange(len(ey)) * factor, np.arange(len(ex)), ex)
    assert abs(_lag(ey - ey.mean(), stretched - stretched.mean())) <= 1  # ± 5 ms


def test_augment_is_seeded_and_disabled_is_identity():
    everything = A.AugmentConfig.from_dict({k: {"prob": 1.0} for k in A.ORDER})
    a, fa, applied = A.augment(X, SR, everything, np.random.default_rng(7))
    b, fb, _ = A.augment(X, SR, everything, np.random.default_rng(7))
    assert a.tobytes() == b.tobytes() and fa == fb
    assert [s.split(":")[0] for s in applied] == list(A.ORDER)
    assert abs(len(a) - len(X) / fa) <= 1 and np.abs(a).max() <= 1.0
    c, _, _ = A.augment(X, SR, everything, np.random.default_rng(8))
    assert c.tobytes() != a.tobytes()
    off = everything.model_copy(update={"enabled": False})
    y, f, applied = A.augment(X, SR, off, np.random.default_rng(7))
    assert y.tobytes() == X.tobytes() and f == 1.0 and applied == []
    nothing = A.AugmentConfig.from_dict({k: {"prob": 0.0} for k in A.ORDER})
    assert A.augment(X, SR, nothing, np.random.default_rng(7))[0].tobytes() == X.tobytes()


def test_config_is_strict_and_checks_ranges():
    from disenttalk.config import ConfigError

    with pytest.raises(ConfigError):
        A.AugmentConfig.from_dict({"noise": {"snr_db": [30, 5]}})
    with pytest.raises(ConfigError):
        A.AugmentConfig.from_dict({"codec": {"codecs": ["flac"]}})
    with pytest.raises(ConfigError):
        A.AugmentConfig.from_dict({"gains": {}})
    assert A.AugmentConfig.from_json(A.AugmentConfig().to_json()) == A.AugmentConfig()


# -- the training side --------------------------------------------------------------------------
def _clip(clip_id: str = "c", frames: int = 75, n: int = 3):
    """A clip as load_clip builds it, without a store: waveform, features from the frontend."""
    from disenttalk.audio import make_frontend
    from disenttalk.model.config import AudioConfig
    from workflows.train.data import Clip

    audio_cfg = AudioConfig(n_mels=8)
    waveform = _speech_like(frames / 25, seed=3)
    t = np.arange(frames, dtype=np.float32)
    expression = np.stack([t, 2 * t, np.sin(t / 5)], axis=1)[:, :n].astype(np.float32)
    valid = np.ones(frames, bool)
    valid[40] = False
    expression[40] = 0.0
    features = make_frontend(audio_cfg)(waveform, SR, frames)
    return Clip(clip_id, expression, features, valid, waveform=waveform, sample_rate=SR), audio_cfg


def test_stretch_truth_interpolates_expression_and_keeps_invalid_frames_out():
    from workflows.train.data import stretch_truth

    t = 100
    expression = np.arange(t, dtype=np.float32)[:, None] * [1.0, -1.0]
    valid = np.ones(t, bool)
    valid[50] = False
    out, ok = stretch_truth(expression.astype(np.float32), valid, 1.1, round(t / 1.1))
    j = np.arange(len(out))
    u = np.clip((j + 0.5) * 1.1 - 0.5, 0, t - 1)  # the input time each frame shows
    np.testing.assert_allclose(out[ok, 0], u[ok], atol=1e-4)
    np.testing.assert_allclose(out[ok, 1], -u[ok], atol=1e-4)
    assert not ok[(u > 49) & (u < 51)].any() and ok[(u < 49) | (u > 51)].all()
    assert (out[~ok] == 0).all()


def test_tempo_variant_gets_the_truth_resampled_to_its_length():
    from disenttalk.audio import make_frontend
    from workflows.train.data import make_variants

    clip, audio_cfg = _clip()
    cfg = A.AugmentConfig.from_dict({"copies": 2, "tempo": {"prob": 1.0, "factor": [1.08, 1.08]},
                                     "pitch": {"prob": 0.0}, "reverb": {"prob": 0.0}, "noise": {"prob": 1.0},
                                     "gain": {"prob": 0.0}, "codec": {"prob": 0.0},
                                     "telephone": {"prob": 0.0}})
    variants = make_variants(clip, cfg, make_frontend(audio_cfg), seed=5)
    assert len(variants) == 2
    for v in variants:
        frames = round(75 / 1.08)
        assert v.tempo == pytest.approx(1.08)
        assert v.audio.shape == (frames, clip.audio.shape[1])
        assert v.expression.shape == (frames, 3) and v.valid.shape == (frames,)
        u = (np.arange(frames) + 0.5) * 1.08 - 0.5
        np.testing.assert_allclose(v.expression[v.valid, 0], u[v.valid], atol=1e-4)
        assert not v.valid[np.abs(u - 40) < 1].any() and v.valid.sum() >= frames - 2
        assert v.augmented[0].startswith("tempo") and v.augmented[1].startswith("noise")
    assert not np.array_equal(variants[0].audio, variants[1].audio)  # two different draws
    again = make_variants(clip, cfg, make_frontend(audio_cfg), seed=5)  # a resumed run
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(variants, again, strict=True))
    assert make_variants(clip, cfg.model_copy(update={"enabled": False}), None, 5) == []


def test_sampler_draws_variants_by_keep_prob():
    from workflows.train.data import WindowSampler, add_variants

    clip, audio_cfg = _clip()
    original = clip.audio.copy()
    cfg = A.AugmentConfig.from_dict({"copies": 2, "noise": {"prob": 1.0}})
    stats = add_variants([clip], cfg, audio_cfg, seed=0)
    assert stats["variants"] == 2 and stats["feature_gap"] < 1e-5 and len(clip.variants) == 2
    norm = {"mean": np.zeros(3, np.float32), "std": np.ones(3, np.float32)}

    def is_original(window: np.ndarray) -> bool:
        return any(np.array_equal(window, original[s : s + 16]) for s in range(len(original) - 15))

    always = WindowSampler([clip], 16, norm, keep_prob=0.0)
    batch = always.sample(32, np.random.default_rng(0))
    assert not any(is_original(w) for w in batch["audio"])
    never = WindowSampler([clip], 16, norm, keep_prob=1.0)
    assert all(is_original(w) for w in never.sample(16, np.random.default_rng(0))["audio"])
    # without variants the draws are the ones an unaugmented run makes
    from workflows.train.data import Clip

    plain = Clip(clip.clip_id, clip.expression, original, clip.valid)
    a = WindowSampler([plain], 16, norm).sample(8, np.random.default_rng(3))
    b = WindowSampler([clip], 16, norm, keep_prob=1.0).sample(8, np.random.default_rng(3))
    assert a["audio"].shape == b["audio"].shape
    off = A.AugmentConfig(enabled=False)
    other, _ = _clip("d")
    assert add_variants([other], off, audio_cfg, 0)["variants"] == 0 and other.variants == []


def test_pitch_shift_moves_the_pitch_and_keeps_the_length():
    from disenttalk.augment import pitch_shift

    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 200.0 * t)).astype(np.float32)
    for semitones, expected in ((12.0, 400.0), (-12.0, 100.0), (7.0, 200.0 * 2 ** (7 / 12))):
        out = pitch_shift(tone, sr, semitones)
        assert len(out) == len(tone)
        spectrum = np.abs(np.fft.rfft(out[2000:-2000] * np.hanning(len(out) - 4000)))
        peak = np.fft.rfftfreq(len(out) - 4000, 1 / sr)[np.argmax(spectrum)]
        assert abs(peak - expected) < 0.02 * expected, (semitones, peak)
    assert np.array_equal(pitch_shift(tone, sr, 0.0), tone)


def test_music_noise_is_tonal_and_at_the_snr():
    from disenttalk.augment import active_mask, add_noise, music

    sr = 16000
    rng = np.random.default_rng(3)
    tones = music(sr * 2, sr, rng)
    spectrum = np.abs(np.fft.rfft(tones)) ** 2
    top = np.sort(spectrum)[::-1]
    assert top[:200].sum() > 0.5 * spectrum.sum()  # energy in a few partials, unlike noise
    speech = (0.1 * np.sin(np.arange(sr * 2) * 0.2) * (np.arange(sr * 2) > sr // 2)).astype(np.float32)
    noisy = add_noise(speech, sr, 10.0, "music", np.random.default_rng(4))
    mask = active_mask(speech, sr)
    noise = noisy - speech
    snr = 10 * np.log10(np.mean(speech[mask].astype(np.float64) ** 2) / np.mean(noise[mask].astype(np.float64) ** 2))
    assert abs(snr - 10.0) < 0.5
