"""``Generator``: model bundle → face motion → frames → talking-face video."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from disenttalk.audio import resolve_device
from disenttalk.bundle import DENOISER, Bundle, load_bundle, load_into
from disenttalk.constants import SAMPLE_RATE
from disenttalk.face.editors import close_lips
from disenttalk.face.regions import REGIONS
from disenttalk.generate.motion import (
    Controls,
    Motion,
    chain_curves,
    compose_pose,
    pingpong,
    respace_blinks,
)
from disenttalk.generate.retarget import PoseLimits, limit_pose
from disenttalk.generate.stream import MotionStream, WindowPlan
from disenttalk.model.diffusion import GaussianDiffusion, Sampler, make_sampler

DEFAULT_GUIDANCE = 2.0  # used when the bundle's meta.json carries no tuned "guidance"
# DDIM's η (0 = deterministic ODE, 1 = as stochastic as DDPM), used when meta.json has no "eta".
# Blinks are what η moves most: on the demo corpus's 12 val clips (66 s, 23 true blinks, re-tracked
# renders of the speakers' photos) η = 0 / 0.25 / 0.4 / 0.5 / 0.75 gave 38 / 27 / 21 / 15 / 16
# blinks (jitter in the eye dims crosses the blink threshold; noise re-injection smooths it away),
# with lip error within 3 % across them. That was one trained model: the best η varies between
# training runs, so ``disenttalk tune-sampler`` picks it per bundle (meta.json "eta").
DEFAULT_ETA = 0.4
CLIP_X0 = 4.0  # predicted x0 clamped to ±4σ of the training data per dim while sampling
# How generated expression drives a portrait: "absolute" = the expression itself on
# the portrait's identity (the identity the expression coefficients carry then shrinks or skews an
# unseen face's motion), "relative" = the portrait moved by (expression − the rest it is taken to
# show: the rest expression plus what the photo shows beyond closed lips, Generator.portrait_rest;
# the default).
# Re-tracked renders of 5 demo test/test_xling clips on the speakers' photos (one bundle, still
# face 0.0229): model LMD 0.0209 absolute, 0.0139 relative with the corpus's rest in the bundle
# (0.0205 with the mean-face fallback); the truth's own motion 0.0179 / 0.0093 (0.0154).
# Subtracting the corpus rest from the plain encoding instead counts identity twice (0.028).
# Callers that fix ``rest`` themselves must use portrait_rest(landmarks) for relative motion.
MOTION_REFERENCES = ("absolute", "relative")
BLINK_FRAMES = 3000  # corpus blink curves chained to 2 min at 25 fps, then played back and forth


@dataclass
class Settings:
    """One generation's sampler, guidance, seed and controls (fixed for a whole stream)."""

    sampler: Sampler
    guidance: float
    seed: int
    controls: Controls
    eyes_known: np.ndarray | None = field(default=None)  # normalised reference eye dims [T_ref, K_eye]
    blink: np.ndarray | None = field(default=None)  # corpus closure curve [T_b], 0..1


class Generator:
    """Turns audio into expression/pose motion with a trained bundle, and motion into video."""

    def __init__(self, bundle: Bundle, *, device: str | torch.device | None = "cpu", window: int = 160,
                 prefix: int = 20, context: int = 25, margin: int = 2, first_hop: int | None = None,
                 frontend: Any = None, denoiser: nn.Module | None = None,
                 motion_reference: str | None = None, pose_limits: PoseLimits | None = None) -> None:
        """``window`` frames per denoiser call, ``prefix`` of them carried over from the last call
        (trained on 80-frame windows, the causal ALiBi network runs longer ones as well: on the
        demo model 160 frames sample lips as close to the truth as 80, and 8 s of speech in
        ~35 % less time, two calls instead of four); ``first_hop`` new frames in the first call
        (default ``window − prefix``: a stream's first frame comes after fewer frames of audio);
        ``motion_reference`` is the default of :meth:`landmarks`' ``rest`` (see there);
        ``pose_limits`` how far :meth:`landmarks` moves a head from the portrait's own pose
        (default :class:`PoseLimits`' defaults, measured on the warp renderer)."""
        if not 0 <= prefix < window:
            raise ValueError("need 0 <= prefix < window")
        self.bundle, cfg = bundle, bundle.config
        self.device = resolve_device(device)
        self.split = bundle.split
        self.fps = cfg.audio.fps
        if frontend is None:
            from disenttalk.audio import make_frontend

            frontend = make_frontend(cfg.audio, self.device)
        self.frontend = frontend
        if denoiser is None:
            from disenttalk.model.denoiser import Denoiser

            denoiser = load_into(Denoiser(cfg.denoiser, bundle.split, frontend.feature_dim),
                                 bundle.denoiser_state, DENOISER)
        self.denoiser = denoiser.eval().to(self.device)
        self.diffusion = GaussianDiffusion(cfg.diffusion, bundle.split).to(self.device)
        look_ahead = getattr(cfg.denoiser, "look_ahead", 0)
        self.plan = WindowPlan(hop=window - prefix, prefix=prefix, look_ahead=look_ahead,
                               context=context, margin=margin, first_hop=first_hop)
        self.mean = bundle.norm["mean"].astype(np.float32)
        self.std = bundle.norm["std"].astype(np.float32)
        self.default_guidance = float(bundle.meta.get("guidance", DEFAULT_GUIDANCE))
        eta = bundle.meta.get("eta", DEFAULT_ETA)  # a number, or one per region (tune-sampler)
        self.default_eta: float | dict[str, float] = (
            {k: float(v) for k, v in eta.items()} if isinstance(eta, Mapping) else float(eta))
        self._rest: np.ndarray | None = None  # rest_expression(), computed on first use
        reference = motion_reference or bundle.meta.get("motion_reference", "relative")
        if reference not in MOTION_REFERENCES:
            raise ValueError(f"motion_reference must be one of {MOTION_REFERENCES}, got {reference!r}")
        self.motion_reference = reference
        self.pose_limits = pose_limits or PoseLimits()
        # windows of concurrent streams sampled together (disenttalk.generate.batching); None: alone
        self.batcher: Any = None
        # what runs the sampler's steps: the denoiser, or disenttalk.model.fast.accelerate's engine
        self.hot_path: Any = self.denoiser
        # a portrait's fit to the morphable model (four encodings), by its landmarks: a stream
        # asks for it at every step (LRU, shared by the threads of a serving replica)
        self._fits: OrderedDict[bytes, tuple[np.ndarray, ...]] = OrderedDict()
        self._fits_lock = threading.Lock()

    @classmethod
    def from_bundle(cls, path: str | Path, **kwargs: Any) -> Generator:
        """Load a bundle directory and build its networks."""
        return cls(load_bundle(path), **kwargs)

    # -- motion -----------------------------------------------------------------------------
    def open_stream(self, sample_rate: int = SAMPLE_RATE, *, steps: int | None = None,
                    sampler: str = "ddim", guidance: float | None = None, seed: int = 0,
                    controls: Controls | None = None,
                    eta: float | Mapping[str, float] | None = None,
                    spacing: str | None = None) -> MotionStream:
        """A :class:`MotionStream` to ``push`` audio chunks into and ``flush`` at the end.

        ``steps`` and ``spacing`` default to DDIM-10 quadratic (``diffusion.DEFAULT_STEPS``,
        ``DEFAULT_SPACING``), all T steps for DDPM."""
        controls = controls or Controls()
        eyes = None
        if not isinstance(controls.eyes, str):
            ref = np.asarray(controls.eyes, dtype=np.float32)
            if ref.shape[1] != self.split.num_dims:
                raise ValueError(f"reference eyes: expected [T,{self.split.num_dims}], got {ref.shape}")
            eyes = ((ref - self.mean) / self.std)[:, list(self.split.eye)]
        blinks = self.bundle.blinks
        blink = None
        if controls.use_blinks(blinks is not None):
            blink = chain_curves(blinks["curves"], BLINK_FRAMES, seed)
            if controls.blink_rate is not None:
                blink = respace_blinks(blink, self.fps, controls.blink_rate)
        return MotionStream(self, sample_rate, Settings(
            sampler=make_sampler(self.diffusion, sampler, steps,
                                 self.eta_vector(self.default_eta if eta is None else eta), spacing),
            guidance=self.default_guidance if guidance is None else float(guidance),
            seed=int(seed), controls=controls, eyes_known=eyes, blink=blink))

    def eta_vector(self, eta: float | Mapping[str, float]) -> float | np.ndarray:
        """DDIM η: a number for every dim, or ``{"lip": a, "eye": b, "global": c}`` → one per dim [N]."""
        if not isinstance(eta, Mapping):
            return float(eta)
        if set(eta) != set(REGIONS):
            raise ValueError(f"eta by region needs exactly the keys {REGIONS}, got {sorted(eta)}")
        out = np.zeros(self.split.num_dims)
        for region, value in eta.items():
            out[list(self.split.indices(region))] = float(value)
        return out

    def motion(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, **kwargs: Any) -> Motion:
        """Motion for the whole audio (any length); keywords as in :meth:`open_stream`.

        ``steps`` defaults to 10 (quadratic spacing) for DDIM and all T for DDPM. With a frontend
        that is not ``local`` (HuBERT) the features are those of the whole audio, computed once
        exactly as preprocessing computed the training clips'; a stream (which cannot wait for
        the whole audio) computes them per window, so it approximates this motion.
        """
        chunks = list(self.motion_chunks(audio, sample_rate, **kwargs))
        if not chunks:
            n = self.split.num_dims
            return Motion(np.zeros((0, n), np.float32), np.zeros((0, 6), np.float32), self.fps)
        return Motion.concat(chunks)

    def motion_chunks(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, **kwargs: Any
                      ) -> Iterator[Motion]:
        """:meth:`motion` a window at a time, each window sampled when the next chunk is asked
        for (so a caller can draw one window's frames while the next samples); the chunks
        concatenate to :meth:`motion`."""
        stream = self.open_stream(sample_rate, **kwargs)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if not getattr(self.frontend, "local", True) and len(audio):
            stream.whole = self.features(audio, sample_rate, self.frontend.num_frames(len(audio), sample_rate))
        stream.add(audio)
        yield from stream.ready()
        yield from stream.rest()

    def stream(self, audio_chunks: Iterable[np.ndarray], sample_rate: int = SAMPLE_RATE,
               **kwargs: Any) -> Iterator[Motion]:
        """Yield Motion chunks as soon as each hop of audio has arrived; flushes at the end."""
        stream = self.open_stream(sample_rate, **kwargs)
        for chunk in audio_chunks:
            yield from stream.push(chunk)
        yield from stream.flush()

    # -- pieces the stream calls ------------------------------------------------------------
    def features(self, audio: np.ndarray, sample_rate: int, num_frames: int) -> torch.Tensor:
        """Audio features [num_frames, F] aligned to video frames from the slice's first sample."""
        feats = self.frontend(audio, sample_rate, num_frames=num_frames)
        return torch.as_tensor(np.asarray(feats, dtype=np.float32), device=self.device)

    def window(self, index: int, feats: torch.Tensor, prefix: torch.Tensor | None, start: int,
               settings: Settings) -> torch.Tensor:
        """Sample one window [L,N] (normalised) given audio [L,F] and a known prefix [P,N]; with
        a :attr:`batcher`, in a batch with the windows other threads sample at the same time
        (the same numbers as alone)."""
        from disenttalk.generate.batching import sample_windows

        job = self.window_job(index, feats, prefix, start, settings)
        if self.batcher is not None:
            return self.batcher.run(self, job, CLIP_X0)
        return sample_windows(self, [job], CLIP_X0)[0]

    def window_job(self, index: int, feats: torch.Tensor, prefix: torch.Tensor | None, start: int,
                   settings: Settings) -> Any:
        """Window ``index``'s :class:`~disenttalk.generate.batching.WindowJob`: the prefix and any
        reference eyes as known values, its noise seeded from (seed, index) alone (reproducible,
        and the same offline and streamed)."""
        from disenttalk.generate.batching import WindowJob, window_seed

        L, n = feats.shape[0], self.split.num_dims
        cond = torch.zeros(L, n, device=self.device)
        mask = torch.zeros(L, n, device=self.device)
        if prefix is not None and len(prefix):
            cond[: len(prefix)], mask[: len(prefix)] = prefix, 1.0
        if settings.eyes_known is not None:  # reference eyes: known on every frame
            idx = pingpong(len(settings.eyes_known), np.arange(start, start + L))
            eye = list(self.split.eye)
            cond[:, eye] = torch.as_tensor(settings.eyes_known[idx], device=self.device)
            mask[:, eye] = 1.0
        return WindowJob(feats=feats, cond=cond, mask=mask, settings=settings,
                         seed=window_seed(settings.seed, index))

    def to_motion(self, x: torch.Tensor, start: int, settings: Settings) -> Motion:
        """Normalised [T,N] → Motion: corpus blinks added, region scales on the deviations from
        rest, then parameter units."""
        scaled = x.float().cpu().numpy()
        if settings.blink is not None:
            # the eyes' closure coordinate is the corpus's: the generated eyes' own dips along the
            # blink direction are replaced by the closure curve (same frames offline and streamed);
            # their other motion stays
            eye = list(self.split.eye)
            u = self.bundle.blinks["direction"] / self.std[eye]  # normalised direction [K_eye]
            rest = (self.rest_expression()[eye] - self.mean[eye]) / self.std[eye]
            own = (scaled[:, eye] - rest) @ u / float(u @ u)
            closure = settings.blink[pingpong(len(settings.blink), np.arange(start, start + len(x)))]
            scaled[:, eye] += (closure - own)[:, None] * u
        scales = settings.controls.region_scales(self.split)
        if np.any(scales != 1.0):  # scale each region's motion about the resting expression
            centre = (self.rest_expression() - self.mean) / self.std
            scaled = centre + (scaled - centre) * scales
        expression = (self.mean + self.std * scaled).astype(np.float32)
        pose = settings.controls.pose_at(np.arange(start, start + len(x)), self.pose_limits)
        return Motion(expression, pose.astype(np.float32), float(self.fps), start)

    # -- frames and video -------------------------------------------------------------------
    def rest_expression(self) -> np.ndarray:
        """The resting expression [N] (parameter units) of the model's faces: lips closed, eyes open.

        The bundle's meta.json ``rest_expression`` (the corpus's quietest frames) when there,
        else the morphable model's mean shape with its lips closed (the geometric editor of
        Eq. 1–2) encoded with zero identity; without a morphable model, the training mean.
        """
        if self._rest is not None:
            return self._rest
        stored = self.bundle.meta.get("rest_expression")
        morphable = self.bundle.morphable
        if stored is not None:
            rest = np.asarray(stored, dtype=np.float32)
            if rest.shape != (self.split.num_dims,):
                raise ValueError(f"meta.json rest_expression has shape {rest.shape}, "
                                 f"expected ({self.split.num_dims},)")
        elif morphable is not None:
            rest = morphable.encode(close_lips(morphable.mean)[None],
                                    identity=np.zeros(morphable.n_identity))[0][0]
        else:
            rest = self.mean
        self._rest = np.asarray(rest, dtype=np.float32)
        return self._rest

    def portrait_rest(self, portrait_landmarks: np.ndarray) -> np.ndarray:
        """The expression [N] relative motion takes a portrait to show: :meth:`rest_expression`
        plus what the photo shows beyond closed lips (its encoding minus that of its lips-closed
        edit, both with its identity).

        The difference of two encodings of one face cancels the part of its identity that the
        identity basis misses and that leaks into the expression coefficients (the reason plain
        "portrait − corpus rest" counted identity twice), and keeps what the photo really does
        with its mouth: a smile with parted lips closes when the motion rests, as the demo
        corpus's truth does.
        """
        morphable = self.bundle.morphable
        lm = np.asarray(portrait_landmarks, dtype=np.float64)
        own, _, identity = morphable.encode(lm[None])
        closed = morphable.encode(close_lips(lm)[None], identity=identity)[0]
        return (self.rest_expression() + own[0] - closed[0]).astype(np.float32)

    def landmarks(self, motion: Motion, portrait_landmarks: np.ndarray,
                  rest: np.ndarray | str | None = None) -> np.ndarray:
        """Target landmarks [T,478,3] of a portrait [478,3] under the motion.

        Frame t is the portrait's own shape moved by ``expression_t − rest`` in the morphable
        model's expression space, at the portrait's pose composed with the motion's pose: the
        motion means the same on any face, and a new face keeps its shape and resting
        expression (the identity basis only approximates an unseen face, and whatever of its
        shape leaks into the expression coefficients stays put). ``rest`` is the expression
        the portrait is taken to show: ``"portrait"`` = the portrait's own encoded expression
        (absolute motion: the expression itself on the portrait's identity); an [N] array; or
        None = the generator's ``motion_reference``: "relative" (the default)
        :meth:`portrait_rest`, "absolute" as ``"portrait"``. The motion's pose deviation is
        softly limited to ``pose_limits`` first (:func:`~disenttalk.generate.retarget.limit_pose`:
        small head motion unchanged, large motion bent towards what the warp renderer draws
        without folding the face or smearing the hair).
        """
        morphable = self.bundle.morphable
        if morphable is None:
            raise ValueError("this bundle has no morphable model, so it cannot render video")
        own, pose0, identity, detail, relative = self._portrait_fit(portrait_landmarks)
        if rest is None:
            rest = "portrait" if self.motion_reference == "absolute" else relative
        if isinstance(rest, str):
            if rest != "portrait":
                raise ValueError(f"rest must be None, 'portrait' or an [N] array, got {rest!r}")
            rest = own[0]
        # decode(e − rest + own) + detail = portrait shape + (e − rest)·B_exp, posed.
        expression = np.asarray(motion.expression, np.float64) - np.asarray(rest, np.float64) + own[0]
        deviation = limit_pose(motion.pose, self.pose_limits)
        pose = compose_pose(np.asarray(pose0).reshape(-1), deviation)  # [T,6]
        return np.asarray(morphable.decode(expression, pose, identity, detail), dtype=np.float32)

    def _portrait_fit(self, portrait_landmarks: np.ndarray) -> tuple[np.ndarray, ...]:
        """(own expression [1,N], pose [1,6], identity [K], detail [478,3], portrait_rest [N]) of
        a portrait's landmarks [478,3], computed once per portrait (shared: not to be changed)."""
        lm = np.ascontiguousarray(portrait_landmarks, dtype=np.float32)
        key = hashlib.sha256(lm.tobytes()).digest() + repr(lm.shape).encode()
        with self._fits_lock:
            fit = self._fits.get(key)
            if fit is not None:
                self._fits.move_to_end(key)
                return fit
        morphable = self.bundle.morphable
        own, pose0, identity = morphable.encode(lm[None])
        fit = (own, pose0, identity, morphable.detail(lm), self.portrait_rest(lm))
        with self._fits_lock:
            self._fits[key] = fit
            while len(self._fits) > 64:
                self._fits.popitem(last=False)
        return fit

    def render(self, motion: Motion, portrait: np.ndarray,
               portrait_landmarks: np.ndarray | None = None,
               rest: np.ndarray | str | None = None, sharp: np.ndarray | None = None) -> np.ndarray:
        """Frames uint8 [T,H,W,3]: the portrait moved by the motion (see :meth:`landmarks`).

        ``sharp``: the same square crop at a higher resolution [S',S',3] (``Portrait.sharp_crop``):
        the motion is worked out on ``portrait`` and its landmarks, the frames are drawn on
        ``sharp`` ([T,S',S',3]), so a large photo keeps its detail."""
        if self.bundle.morphable is None:
            raise ValueError("this bundle has no morphable model, so it cannot render video")
        portrait = np.asarray(portrait)
        if portrait_landmarks is None:
            from disenttalk.face.tracker import FaceTracker

            with FaceTracker(static=True) as tracker:
                portrait_landmarks = tracker.track_image(portrait)
            if portrait_landmarks is None:
                raise ValueError("no face found in the portrait")
        portrait_landmarks = np.asarray(portrait_landmarks, dtype=np.float32)
        landmarks = self.landmarks(motion, portrait_landmarks, rest)
        renderer, scale = self.renderer(portrait, portrait_landmarks, sharp)
        return renderer.render(landmarks * scale)

    def renderer(self, portrait: np.ndarray, portrait_landmarks: np.ndarray,
                 sharp: np.ndarray | None = None) -> tuple[Any, float]:
        """:func:`crop_renderer` on this generator's device."""
        return crop_renderer(portrait, portrait_landmarks, sharp, device=self.device)

    def generate(self, audio: np.ndarray | str | Path, portrait: np.ndarray | str | Path,
                 out_path: str | Path, sample_rate: int = SAMPLE_RATE,
                 portrait_landmarks: np.ndarray | None = None, **kwargs: Any) -> Motion:
        """Write an mp4 of the portrait speaking the audio (with the audio); returns the motion."""
        from disenttalk import media

        if isinstance(audio, (str, Path)):
            audio, sample_rate = media.read_audio(audio, sample_rate), sample_rate
        if isinstance(portrait, (str, Path)):
            portrait = media.read_image(portrait)
        motion = self.motion(np.asarray(audio, dtype=np.float32), sample_rate, **kwargs)
        frames = self.render(motion, portrait, portrait_landmarks)
        media.write_video(out_path, frames, motion.fps, audio=audio, sample_rate=sample_rate)
        return motion


def crop_renderer(portrait: np.ndarray, portrait_landmarks: np.ndarray,
                  sharp: np.ndarray | None = None, device: str | torch.device = "cpu") -> tuple[Any, float]:
    """(WarpRenderer, scale) for a portrait crop and its landmarks [478,3]: drawing on the crop
    itself (scale 1) or on ``sharp``, the same square crop at a higher resolution, whose pixels
    per crop pixel ``scale`` is; target landmarks (:meth:`Generator.landmarks`) × scale go in. A
    large photo drawn on its own pixels is read bicubically, so what moves stays sharp too."""
    from disenttalk.render.renderer import RenderConfig, WarpRenderer

    portrait = np.asarray(portrait)
    image = portrait if sharp is None else np.asarray(sharp)
    if image.ndim != 3 or image.shape[0] != image.shape[1] or portrait.shape[0] != portrait.shape[1]:
        raise ValueError(f"expected square crops, got {portrait.shape} and {image.shape}")
    scale = image.shape[0] / portrait.shape[0]
    config = None if sharp is None else RenderConfig(sampling="bicubic")
    return WarpRenderer(image, np.asarray(portrait_landmarks) * scale, device=device,
                        config=config), scale
