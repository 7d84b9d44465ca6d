"""Generator: windows without seams, streaming = offline, controls, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from disenttalk.bundle import Bundle
from disenttalk.face.regions import RegionSplit
from disenttalk.generate import Controls, Generator, Motion
from disenttalk.generate.motion import compose_pose, pose_deviation
from disenttalk.model.config import DenoiserConfig, ModelConfig
from disenttalk.model.diffusion import GaussianDiffusion

SR, FPS, N = 16000, 25, 10
SPLIT = RegionSplit.contiguous(N, k_lip=3, k_eye=2)


class FrameFrontend:
    """Stand-in audio frontend: per 25 fps frame, RMS and mean |x| of its samples (frame-local)."""

    feature_dim = 2

    def __call__(self, audio, sample_rate, num_frames=None):
        spf = sample_rate // FPS
        n = num_frames if num_frames is not None else -(-len(audio) // spf)
        padded = np.zeros(n * spf, np.float32)
        padded[: min(len(audio), n * spf)] = audio[: n * spf]
        frames = padded.reshape(n, spf)
        return np.stack([np.sqrt((frames**2).mean(1)), np.abs(frames).mean(1)], 1).astype(np.float32)


class SmoothDenoiser(nn.Module):
    """Stand-in ε-network whose x0 estimate is a causal exponential smoothing of an audio- and
    noise-driven target that restarts from known values wherever the mask says so: a model that
    uses its known prefix the way the real one is trained to, with output that depends on the noise."""

    def __init__(self, diffusion: GaussianDiffusion, a: float = 0.8, c: float = 0.3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.diffusion, self.a, self.c = diffusion, a, c
        self.proj = nn.Parameter(3.0 * torch.randn(FrameFrontend.feature_dim, N, generator=g))
        self.null = nn.Parameter(torch.randn(FrameFrontend.feature_dim, generator=g))

    def forward(self, x_t, t, audio, cond=None, cond_mask=None, drop_audio=None):
        B, T, _ = x_t.shape
        null = self.null.expand(B, T, -1)
        if audio is None:
            audio = null
        elif drop_audio is not None:
            audio = torch.where(drop_audio[:, None, None], null, audio)
        target = torch.tanh(audio @ self.proj) + self.c * x_t
        known = torch.zeros_like(x_t, dtype=torch.bool) if cond_mask is None else cond_mask.bool()
        ys, y = [], None
        for f in range(T):
            y = target[:, f] if y is None else self.a * y + (1 - self.a) * target[:, f]
            if cond is not None:
                y = torch.where(known[:, f], cond[:, f], y)
            ys.append(y)
        return self.diffusion.predict_eps(x_t, t, torch.stack(ys, 1))


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise under a syllable-rate (4 Hz) and phrase-rate envelope."""
    t = np.arange(int(seconds * SR)) / SR
    env = (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.23 * t))
    return (0.3 * env * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    cfg = ModelConfig(denoiser=DenoiserConfig(dim=16, num_blocks=2, heads=2), n_expression=N,
                      k_lip=3, k_eye=2)
    norm = {"mean": np.linspace(-1, 1, N).astype(np.float32),
            "std": np.linspace(0.5, 2, N).astype(np.float32)}
    return Bundle(path=None, config=cfg, split=SPLIT, norm=norm, expert_state={},
                  denoiser_state={}, meta={"guidance": 1.5})


def make_gen(bundle: Bundle, **kw) -> Generator:
    diffusion = GaussianDiffusion(bundle.config.diffusion)
    return Generator(bundle, frontend=FrameFrontend(), denoiser=SmoothDenoiser(diffusion), **kw)


def border_and_other_jumps(x: np.ndarray, hop: int) -> tuple[np.ndarray, np.ndarray]:
    jumps = np.linalg.norm(np.diff(x, axis=0), axis=1)  # jumps[k] = |x[k+1] - x[k]|
    borders = np.zeros(len(jumps), bool)
    borders[np.arange(hop, len(x), hop) - 1] = True
    return jumps[borders], jumps[~borders]


@pytest.fixture(scope="module")
def minute(bundle):
    gen = make_gen(bundle, window=40, prefix=10)
    audio = speech_like(60.0)
    return gen, audio, gen.motion(audio, SR, steps=4, seed=3)


def test_sixty_seconds_without_seams(bundle, minute):
    gen, audio, motion = minute
    assert len(motion) == 60 * FPS and motion.expression.shape == (1500, N)
    assert np.all(np.isfinite(motion.expression))
    x = (motion.expression - gen.mean) / gen.std
    at_borders, elsewhere = border_and_other_jumps(x, gen.plan.hop)
    assert len(at_borders) == 1500 // gen.plan.hop - 1 + (1500 % gen.plan.hop > 0)
    assert at_borders.max() <= np.percentile(elsewhere, 99)
    # the same check catches seams: without the carried prefix every border jumps
    no_prefix = make_gen(bundle, window=30, prefix=0).motion(audio, SR, steps=4, seed=3)
    at_borders, elsewhere = border_and_other_jumps((no_prefix.expression - gen.mean) / gen.std, 30)
    assert np.median(at_borders) > np.percentile(elsewhere, 99)


def test_seeded_and_reproducible(bundle, minute):
    gen, audio, motion = minute
    short = audio[: 5 * SR]
    a = gen.motion(short, SR, steps=4, seed=3)
    assert len(a) == 125
    assert np.array_equal(a.expression, gen.motion(short, SR, steps=4, seed=3).expression)
    assert not np.allclose(a.expression, gen.motion(short, SR, steps=4, seed=4).expression)


def test_streaming_equals_offline(bundle):
    gen = make_gen(bundle, window=30, prefix=8)
    audio = speech_like(7.3, seed=1)
    offline = gen.motion(audio, SR, steps=3, seed=5, sampler="ddim", eta=0.5)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(len(audio), size=40, replace=False))
    chunks = list(gen.stream(np.split(audio, cuts), SR, steps=3, seed=5, sampler="ddim", eta=0.5))
    assert len(chunks) == -(-len(offline) // gen.plan.hop)
    streamed = Motion.concat(chunks)
    assert streamed.start == 0 and len(streamed) == len(offline) == int(np.ceil(7.3 * FPS))
    assert np.array_equal(streamed.expression, offline.expression)


def test_streaming_equals_offline_with_the_real_denoiser(bundle):
    """The same with the trained network's architecture (random weights) and the mel frontend:
    window borders, prefixes and look-ahead cut the same slices in both modes."""
    import dataclasses

    from disenttalk.model.denoiser import Denoiser

    cfg = bundle.config.model_copy(update={"denoiser": bundle.config.denoiser.model_copy(
        update={"look_ahead": 2})})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = Denoiser(cfg.denoiser, SPLIT, 2 * cfg.audio.n_mels).state_dict()
    real = dataclasses.replace(bundle, config=cfg, denoiser_state=state)
    gen = Generator(real, window=40, prefix=8, first_hop=10)
    audio = speech_like(6.1, seed=2)
    offline = gen.motion(audio, SR, steps=3, seed=7)
    cuts = np.sort(np.random.default_rng(1).choice(len(audio), size=25, replace=False))
    streamed = Motion.concat(list(gen.stream(np.split(audio, cuts), SR, steps=3, seed=7)))
    assert len(streamed) == len(offline) == int(np.ceil(6.1 * FPS))
    np.testing.assert_array_equal(streamed.expression, offline.expression)
    assert np.abs(np.diff(offline.expression, axis=0)).max() > 0  # it does move


def test_stream_latency_is_one_hop(bundle):
    gen = make_gen(bundle, window=30, prefix=8)
    stream = gen.open_stream(SR, steps=2, seed=0)
    plan = gen.plan
    need = round((plan.hop + plan.look_ahead + plan.margin) * SR / FPS)  # first hop + margin
    audio = speech_like(3.0)
    assert stream.push(audio[: need - 1]) == []
    first = stream.push(audio[need - 1 : need])
    assert len(first) == 1 and first[0].start == 0 and len(first[0]) == plan.hop
    rest = stream.push(audio[need:]) + stream.flush()
    assert Motion.concat(first + rest).expression.shape == (75, N)
    assert stream.flush() == [] and pytest.raises(RuntimeError, stream.push, audio[:10])


def test_short_first_hop_comes_sooner_and_streams_like_offline(bundle):
    gen = make_gen(bundle, window=30, prefix=8, first_hop=5)
    plan = gen.plan
    stream = gen.open_stream(SR, steps=2, seed=0)
    need = round((plan.first_hop + plan.look_ahead + plan.margin) * SR / FPS)
    audio = speech_like(4.1, seed=2)
    assert stream.push(audio[: need - 1]) == []
    first = stream.push(audio[need - 1 : need])
    assert len(first) == 1 and first[0].start == 0 and len(first[0]) == plan.first_hop
    second = stream.push(audio[need : need + round(plan.hop * SR / FPS)])
    assert [(m.start, len(m)) for m in second] == [(plan.first_hop, plan.hop)]
    streamed = Motion.concat(first + second + stream.push(audio[need + round(plan.hop * SR / FPS):])
                             + stream.flush())
    offline = gen.motion(audio, SR, steps=2, seed=0)
    assert len(streamed) == len(offline) == int(np.ceil(4.1 * FPS))
    assert np.array_equal(streamed.expression, offline.expression)
    with pytest.raises(ValueError, match="first_hop"):
        make_gen(bundle, window=30, prefix=8, first_hop=23)


def test_short_and_empty_audio(bundle):
    gen = make_gen(bundle, window=30, prefix=8)
    assert len(gen.motion(speech_like(0.1), SR, steps=2)) == 3
    assert len(gen.motion(np.zeros(0, np.float32), SR, steps=2)) == 0


def test_lip_scale_zero_rests_lips_at_rest(bundle):
    gen = make_gen(bundle, window=30, prefix=8)
    audio = speech_like(3.0)
    base = gen.motion(audio, SR, steps=3, seed=1)
    quiet = gen.motion(audio, SR, steps=3, seed=1, controls=Controls(lip_scale=0.0, global_scale=2.0))
    lip, glob = list(SPLIT.lip), list(SPLIT.global_)
    rest = gen.rest_expression()
    assert rest.shape == (N,) and np.all(np.isfinite(rest))
    assert np.allclose(quiet.expression[:, lip], rest[lip], atol=1e-5)
    assert np.allclose(quiet.expression[:, list(SPLIT.eye)], base.expression[:, list(SPLIT.eye)])
    dev = lambda m: (m.expression[:, glob] - rest[glob]) / gen.std[glob]  # noqa: E731
    assert np.allclose(dev(quiet), 2.0 * dev(base), atol=1e-4)


def test_rest_expression_is_the_bundles_or_the_mean_face_with_closed_lips(bundle, face):
    import dataclasses

    from disenttalk.face.editors import close_lips

    plain = make_gen(bundle)  # no morphable model: the training mean
    assert np.array_equal(plain.rest_expression(), plain.mean)
    morphable = face[2]
    gen = make_gen(dataclasses.replace(bundle, morphable=morphable))
    closed = morphable.encode(close_lips(morphable.mean)[None], identity=np.zeros(morphable.n_identity))[0]
    np.testing.assert_allclose(gen.rest_expression(), closed[0], rtol=1e-5, atol=1e-6)
    stored = np.arange(N, dtype=np.float32)
    given = make_gen(dataclasses.replace(bundle, meta={**bundle.meta, "rest_expression": stored.tolist()}))
    np.testing.assert_array_equal(given.rest_expression(), stored)


def test_reference_eyes_and_pose_are_reproduced(bundle):
    gen = make_gen(bundle, window=30, prefix=8)
    rng = np.random.default_rng(2)
    ref_expr = gen.mean + gen.std * rng.standard_normal((40, N)).astype(np.float32)
    ref_pose = (0.3 * rng.standard_normal((40, 6))).astype(np.float32)
    audio = speech_like(2.0)  # 50 frames: the 40-frame references play forwards then back
    # pose_scale=1: the reference's motion as it is (by default it is fitted into the pose limits)
    m = gen.motion(audio, SR, steps=3, seed=1,
                   controls=Controls(eyes=ref_expr, pose=ref_pose, pose_scale=1.0))
    idx = np.r_[np.arange(40), np.arange(38, 28, -1)]
    eye = list(SPLIT.eye)
    assert np.allclose(m.expression[:, eye], ref_expr[idx][:, eye], atol=1e-5)
    # the pose follows the reference as a change from its first frame, applied to frame 0's pose
    assert np.allclose(compose_pose(ref_pose[0], m.pose), ref_pose[idx], atol=1e-4)
    assert np.allclose(m.pose[0], 0, atol=1e-6) and not np.allclose(m.pose[1], 0)
    assert np.all(gen.motion(audio, SR, steps=3, controls=Controls()).pose == 0)


def test_controls_validate():
    with pytest.raises(ValueError):
        Controls(eyes="blink")
    with pytest.raises(ValueError):
        Controls(pose=np.zeros((5, 3)))
    with pytest.raises(ValueError):
        Controls(lip_scale=float("nan"))


def test_pose_deviation_is_portable():
    """A deviation moves another face the same way: same relative rotation, scaled translation."""
    rng = np.random.default_rng(4)
    ref = np.c_[0.4 * rng.standard_normal((6, 3)), 100 + 20 * rng.standard_normal((6, 2)),
                np.log(80) + 0.1 * rng.standard_normal((6, 1))]
    dev = pose_deviation(ref)
    assert np.allclose(compose_pose(ref[0], dev), ref, atol=1e-9)
    other = np.array([0.1, -0.2, 0.05, 300.0, 200.0, np.log(160)])
    moved = compose_pose(other, dev)
    assert np.allclose(pose_deviation(np.r_[other[None], moved[1:]]), dev, atol=1e-9)
    ratio = 160.0 / np.exp(ref[0, 5])  # the other face is this much larger in its image
    assert np.allclose(moved[:, 3:5] - other[3:5], ratio * (ref[:, 3:5] - ref[0, 3:5]))


def test_window_features_match_whole_clip_features():
    """With the plan's context and margin, log-mel features of a window's audio slice equal
    those of the whole clip on the window's frames (so windows and streams see what training saw)."""
    from disenttalk.audio import make_frontend
    from disenttalk.generate.stream import WindowPlan
    from disenttalk.model.config import AudioConfig

    frontend = make_frontend(AudioConfig(n_mels=20))
    audio = speech_like(4.0, seed=2)
    whole = frontend(audio, SR)
    plan = WindowPlan(hop=22, prefix=8, look_ahead=1, context=25, margin=2)
    spf = SR // FPS
    for i in range(4):
        span_start, _, _, gen_end = plan.frames(i)
        a0, a1 = plan.audio_frames(i)
        part = frontend(audio[a0 * spf:a1 * spf], SR, num_frames=a1 - a0)
        np.testing.assert_allclose(part[span_start - a0:gen_end - a0], whole[span_start:gen_end],
                                   atol=1e-4)


@pytest.fixture(scope="module")
def face(astronaut):
    """A 256² portrait, its landmarks, and a morphable model fit to jittered copies of them."""
    from skimage.transform import resize

    from disenttalk.face.morphable import MorphableModel
    from disenttalk.face.tracker import FaceTracker

    portrait = (resize(astronaut[:300, 100:400], (256, 256)) * 255).astype(np.uint8)
    with FaceTracker(static=True) as tracker:
        lm = tracker.track_image(portrait)
    assert lm is not None
    rng = np.random.default_rng(0)
    clips = [lm + rng.normal(0, 0.6, (20, *lm.shape)).astype(np.float32) for _ in range(3)]
    return portrait, lm, MorphableModel.fit(clips, n_expression=N)


def test_render_and_generate_video(bundle, face, tmp_path):
    import dataclasses

    from disenttalk import media
    from disenttalk.face.editors import close_lips

    portrait, lm, morphable = face
    gen = make_gen(dataclasses.replace(bundle, morphable=morphable), window=30, prefix=8,
                   motion_reference="relative")
    # relative motion: the resting expression renders a portrait whose lips are closed as it is ...
    rest = gen.rest_expression()
    still = Motion(np.repeat(rest[None], 3, 0), np.zeros((3, 6), np.float32))
    lm = close_lips(lm)  # (the pixels are the astronaut's smile; only the landmarks matter here)
    np.testing.assert_allclose(gen.landmarks(still, lm)[:, :, :2], np.repeat(lm[None, :, :2], 3, 0),
                               atol=1e-3)
    frames = gen.render(still, portrait, lm)
    assert frames.shape == (3, 256, 256, 3) and frames.dtype == np.uint8
    assert np.abs(frames.astype(float) - portrait).mean() < 2.0
    # ... and so does the portrait's own expression when it is declared the rest (absolute motion)
    expr0, _, _ = morphable.encode(lm[None])
    own = Motion(np.repeat(expr0, 3, 0).astype(np.float32), np.zeros((3, 6), np.float32))
    assert np.abs(gen.render(own, portrait, lm, rest="portrait").astype(float) - portrait).mean() < 2.0
    # generated motion moves the face, and the mp4 carries the audio
    audio = speech_like(1.0)
    out = tmp_path / "talk.mp4"
    motion = gen.generate(audio, portrait, out, SR, steps=2, controls=Controls(lip_scale=3.0))
    video = media.read_video(out)
    assert len(video.frames) == len(motion) == 25 and video.fps == pytest.approx(FPS)
    assert abs(len(video.audio) - len(audio)) < 0.05 * SR
    moved = np.abs(video.frames.astype(float) - portrait).mean(axis=(1, 2, 3))
    assert moved.max() > 0.5


def test_motion_moves_any_face_the_same_way(bundle, face):
    """Relative motion: the rest keeps each face's own shape exactly, and a motion displaces two
    different faces' landmarks alike (in units of face size), whatever their resting expressions."""
    import dataclasses

    from disenttalk.face import topology as topo
    from disenttalk.face.editors import close_lips

    portrait, lm, morphable = face
    gen = make_gen(dataclasses.replace(bundle, morphable=morphable), window=30, prefix=8,
                   motion_reference="relative")
    rest = gen.rest_expression()
    lm = close_lips(lm)  # faces at rest: lips closed
    # another face: wider mouth and eyes set further apart (an identity the model never saw)
    other = lm.copy()
    centre = other[:, :2].mean(0)
    other[list(topo.LIPS), 0] = centre[0] + 1.3 * (other[list(topo.LIPS), 0] - centre[0])
    other[list(topo.EYES), 0] = centre[0] + 1.1 * (other[list(topo.EYES), 0] - centre[0])
    rng = np.random.default_rng(5)
    expression = rest + 2.0 * morphable.expression_std[None] * rng.standard_normal((4, N))
    motion = Motion(np.r_[rest[None], expression].astype(np.float32), np.zeros((5, 6), np.float32))
    for face_lm in (lm, other):
        out = gen.landmarks(motion, face_lm)
        np.testing.assert_allclose(out[0, :, :2], face_lm[:, :2], atol=1e-3)  # rest = the face itself
    moved = gen.landmarks(motion, lm)[1:] - lm
    moved_other = gen.landmarks(motion, other)[1:] - other
    assert np.abs(moved).max() > 1.0  # the motion does move the face (pixels)
    np.testing.assert_allclose(moved_other[..., :2], moved[..., :2], atol=0.05 * np.abs(moved).max())


def test_relative_motion_is_the_default_and_absolute_keeps_the_portraits_own_expression(bundle, face):
    import dataclasses

    portrait, lm, morphable = face
    with_face = dataclasses.replace(bundle, morphable=morphable)
    gen = make_gen(with_face, window=30, prefix=8)
    assert gen.motion_reference == "relative"
    np.testing.assert_allclose(gen.landmarks(Motion(np.repeat(gen.portrait_rest(lm)[None], 2, 0),
                                                    np.zeros((2, 6), np.float32)), lm)[0, :, :2],
                               lm[:, :2], atol=1e-3)  # the portrait's own rest renders it as it is
    absolute = make_gen(with_face, window=30, prefix=8, motion_reference="absolute")
    expr0, _, _ = morphable.encode(lm[None])
    own = Motion(np.repeat(expr0, 2, 0).astype(np.float32), np.zeros((2, 6), np.float32))
    np.testing.assert_allclose(absolute.landmarks(own, lm), gen.landmarks(own, lm, rest="portrait"))
    np.testing.assert_allclose(absolute.landmarks(own, lm)[0, :, :2], lm[:, :2], atol=1e-3)
    with pytest.raises(ValueError, match="motion_reference"):
        make_gen(bundle, motion_reference="sideways")


def test_a_portraits_fit_is_made_once_and_gives_the_same_landmarks(bundle, face, monkeypatch):
    """A stream asks for landmarks at every step: the portrait's four encodings are made on the
    first call only, per portrait, and later calls give exactly what a fresh generator gives."""
    import dataclasses

    portrait, lm, morphable = face
    with_face = dataclasses.replace(bundle, morphable=morphable)
    gen = make_gen(with_face, window=30, prefix=8)
    rng = np.random.default_rng(3)
    motion = Motion((gen.rest_expression() + 0.5 * morphable.expression_std[None]
                     * rng.standard_normal((3, N))).astype(np.float32), np.zeros((3, 6), np.float32))
    other = lm.copy()
    other[:, 0] += 7.0
    first = gen.landmarks(motion, lm)
    calls = []
    real_encode = type(morphable).encode
    monkeypatch.setattr(type(morphable), "encode", lambda self, *a, **k: calls.append(1) or real_encode(self, *a, **k))
    for _ in range(3):
        np.testing.assert_array_equal(gen.landmarks(motion, lm), first)
    assert calls == []  # cached
    moved = gen.landmarks(motion, other)
    assert len(calls) == 4  # a new portrait: its own fit
    np.testing.assert_array_equal(moved, make_gen(with_face, window=30, prefix=8).landmarks(motion, other))
    np.testing.assert_array_equal(gen.landmarks(motion, lm, rest="portrait"),
                                  make_gen(with_face, window=30, prefix=8).landmarks(motion, lm, rest="portrait"))


def test_corpus_blinks_set_the_eyes_blink_coordinate_only_and_stream_like_offline(bundle):
    import dataclasses

    from disenttalk.generate.generator import BLINK_FRAMES
    from disenttalk.generate.motion import chain_curves

    curves = np.zeros((4, 40), np.float32)
    for i, at in enumerate((5, 12, 20, 30)):
        curves[i, at:at + 5] = [0.4, 0.9, 1.0, 0.9, 0.4]
    direction = np.array([-1.5, 0.7], np.float32)
    with_blinks = dataclasses.replace(bundle, blinks={"direction": direction, "curves": curves})
    gen = make_gen(with_blinks, window=30, prefix=8)
    audio = speech_like(3.0)
    kw = dict(steps=2, seed=3)
    blinked = gen.motion(audio, SR, **kw)
    plain = gen.motion(audio, SR, controls=Controls(blinks=False), **kw)
    eye = list(SPLIT.eye)
    others = [d for d in range(N) if d not in eye]
    # the network sees the same inputs: only the eye dims move, and only along the direction
    diff = blinked.expression - plain.expression
    np.testing.assert_allclose(diff[:, others], 0.0, atol=1e-5)
    np.testing.assert_allclose(diff[:, eye], (diff[:, eye] @ direction / (direction @ direction))[:, None]
                               * direction, atol=1e-4)
    # ... where the eyes now follow the seed's chained curve exactly (about the resting expression)
    # (the projection is taken in the denoiser's normalised units)
    std = bundle.norm["std"][eye]
    u = direction / std

    def closure(expression):
        return ((expression[:, eye] - gen.rest_expression()[eye]) / std) @ u / (u @ u)

    expected = chain_curves(curves, BLINK_FRAMES, seed=3)[: len(blinked)]
    np.testing.assert_allclose(closure(blinked.expression), expected, atol=1e-4)
    assert expected.max() > 0.9 and 0.05 < (expected > 0.5).mean() < 0.5
    assert not np.allclose(closure(gen.motion(audio, SR, steps=2, seed=4).expression), expected)
    streamed = Motion.concat(list(gen.stream(np.array_split(audio, 9), SR, **kw)))
    np.testing.assert_array_equal(streamed.expression, blinked.expression)
    # a reference's own eyes are kept as they are; a bundle without blinks cannot be asked for them
    ref = np.zeros((10, N), np.float32)
    a = gen.motion(audio, SR, controls=Controls(eyes=ref), **kw)
    b = gen.motion(audio, SR, controls=Controls(eyes=ref, blinks=False), **kw)
    np.testing.assert_array_equal(a.expression, b.expression)
    with pytest.raises(ValueError, match="no blink model"):
        make_gen(bundle).motion(audio, SR, controls=Controls(blinks=True), **kw)


def test_blink_rate_respaces_the_corpus_blinks(bundle):
    import dataclasses

    from disenttalk.generate.generator import BLINK_FRAMES
    from disenttalk.generate.motion import chain_curves, respace_blinks

    curves = np.zeros((3, 50), np.float32)
    for i, at in enumerate((5, 20, 33)):
        curves[i, at:at + 4] = [0.5, 1.0, 0.8, 0.3]
    chained = chain_curves(curves, 2000, seed=0)

    def runs(c):
        edges = np.diff(np.concatenate([[0], (c > 0).astype(int), [0]]))
        return [tuple(c[s:e]) for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)]

    for rate in (0.1, 0.25, 1.0):
        out = respace_blinks(chained, 25.0, rate)
        assert runs(out) == runs(chained)  # the same closures, in order
        assert len(runs(out)) / (len(out) / 25.0) == pytest.approx(rate, rel=0.02)
    assert not respace_blinks(chained, 25.0, 0.0).any()
    fast = respace_blinks(chained, 25.0, 1.5)  # gaps never below 0.3 s
    gaps = np.diff(np.flatnonzero(np.diff((fast > 0).astype(int)) == 1)) - 4
    assert gaps.min() >= 7
    # the generator uses the respaced chain; rate 0 keeps the eyes open along the blink direction
    direction = np.array([-1.5, 0.7], np.float32)
    gen = make_gen(dataclasses.replace(bundle, blinks={"direction": direction, "curves": curves}),
                   window=30, prefix=8)
    eye, std = list(SPLIT.eye), bundle.norm["std"][list(SPLIT.eye)]
    u = direction / std
    audio = speech_like(3.0)
    for rate in (0.5, 0.0):
        motion = gen.motion(audio, SR, steps=2, seed=3, controls=Controls(blink_rate=rate))
        closure = ((motion.expression[:, eye] - gen.rest_expression()[eye]) / std) @ u / (u @ u)
        expected = respace_blinks(chain_curves(curves, BLINK_FRAMES, seed=3), gen.fps, rate)
        np.testing.assert_allclose(closure, expected[: len(closure)], atol=1e-4)
    for bad in (-0.1, 2.0, "often"):
        with pytest.raises(ValueError, match="blink_rate"):
            Controls(blink_rate=bad)


def test_chained_blink_curves_keep_the_corpus_blink_rate():
    from disenttalk.generate.motion import chain_curves

    rng = np.random.default_rng(0)
    curves = np.full((5, 90), np.nan, np.float32)
    blinks = frames = 0
    for row, length in zip(curves, (90, 30, 60, 45, 75), strict=True):
        row[:length] = 0.0
        for at in rng.choice(np.arange(2, length - 6, 8), size=length // 30, replace=False):
            row[at:at + 4] = [0.5, 1.0, 0.8, 0.3]
        blinks, frames = blinks + length // 30, frames + length
    chained = chain_curves(curves, 20000, seed=1)
    assert np.all(np.isfinite(chained)) and len(chained) >= 20000
    starts = np.flatnonzero(np.diff((chained > 0.4).astype(int)) == 1)
    assert len(starts) / len(chained) == pytest.approx(blinks / frames, rel=0.05)
    np.testing.assert_array_equal(chain_curves(curves, 500, seed=1), chain_curves(curves, 500, seed=1))


def test_blink_model_finds_closures_and_their_direction(face):
    from disenttalk.face.editors import close_eyes, open_mouth
    from disenttalk.face.measures import eye_aspect_ratio
    from disenttalk.face.morphable import MorphableModel
    from workflows.train.data import Clip, blink_model

    _, lm, _ = face
    rng = np.random.default_rng(1)
    shape = [0.0, 0.5, 1.0, 1.0, 0.6, 0.2]  # a 240 ms blink at 25 fps
    sequences = []
    for _ in range(3):
        amount = np.zeros(120)
        for at in rng.choice(np.arange(5, 110, 12), size=3, replace=False):
            amount[at:at + len(shape)] = shape
        speech = 0.5 + 0.5 * np.sin(np.arange(120) * 2 * np.pi / 6)  # the mouth moves too
        frames = np.stack([close_eyes(open_mouth(lm, 0.3 * m), a) for a, m in zip(amount, speech, strict=True)])
        sequences.append(frames + rng.normal(0, 0.15, frames.shape).astype(np.float32))
    morphable = MorphableModel.fit(sequences, n_expression=6)
    clips = [Clip(f"c{k}", morphable.encode(f)[0].astype(np.float32), np.zeros((120, 4), np.float32),
                  np.ones(120, bool)) for k, f in enumerate(sequences)]
    eye = list(range(6))
    # a short clip and a long one (cut in two) beside them: whole clips, NaN past their ends
    clips.append(Clip("short", clips[0].expression[:50], clips[0].audio[:50], clips[0].valid[:50]))
    clips.append(Clip("long", np.concatenate([c.expression for c in clips[:2]]),
                      np.zeros((240, 4), np.float32), np.ones(240, bool)))
    model = blink_model(clips, eye, morphable, max_length=200)
    curves = model["curves"]
    assert curves.shape == (6, 120)
    assert [int(np.isfinite(c).sum()) for c in curves] == [120, 120, 120, 50, 120, 120]
    assert np.nanmin(curves) >= 0 and np.nanmax(curves) <= 1
    closed = np.concatenate([c[np.isfinite(c)] for c in curves[:3]]) > 0.5
    assert 0.03 < closed.mean() < 0.15  # 3 blinks x ~3 shut frames per 120 frames
    # the direction shuts an open face's eyes
    open_expr = morphable.encode(lm[None])[0]
    pose, identity = np.zeros((1, 6)), np.zeros(morphable.n_identity)
    shut = morphable.decode(open_expr + model["direction"][None], pose, identity)
    opened = morphable.decode(open_expr, pose, identity)
    assert eye_aspect_ratio(shut).mean() < 0.5 * eye_aspect_ratio(opened).mean()
