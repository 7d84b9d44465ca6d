"""Times the sampling hot path: one DDIM-10 + guidance window per engine and window shape.

``python -m disenttalk.model.benchmark_hot_path [--bundle DIR] [--threads N] [--compiled]``

Each measurement samples one window as ``Generator.window`` does (x0-or-ε output converted to
ε, x0̂ clipped to ±4, a known 8-frame prefix pinned): offline = 1 window of 160 + look_ahead
frames, stream = k windows of 16 + look_ahead frames stacked in one batch (k streams). Engines:
``forward`` (cfg_eps over ``Denoiser.forward``, the old path) and every bind engine of
:func:`disenttalk.model.fast.accelerate`. Engines alternate within each repeat so a busy
machine slows them alike; medians are reported. Estimated offline RTF = 2 windows × the
offline time / 8 s (8 s of speech in two 160-frame windows).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from disenttalk.face.regions import RegionSplit
from disenttalk.model.config import DenoiserConfig, DiffusionConfig
from disenttalk.model.denoiser import Denoiser
from disenttalk.model.diffusion import GaussianDiffusion, cfg_bind, cfg_eps, make_sampler, sample
from disenttalk.model.fast import accelerate

GUIDANCE, STEPS, CLIP_X0, PREFIX = 2.0, 10, 4.0, 8


def load(bundle: str | None) -> tuple[Denoiser, GaussianDiffusion, int]:
    """A trained bundle's denoiser and diffusion, or the shipped architecture with random
    weights; and its audio feature dims."""
    if bundle:
        from disenttalk.audio import make_frontend
        from disenttalk.bundle import DENOISER, load_bundle, load_into

        b = load_bundle(Path(bundle))
        features = make_frontend(b.config.audio, "cpu").feature_dim
        den = load_into(Denoiser(b.config.denoiser, b.split, features), b.denoiser_state, DENOISER)
        return den.eval(), GaussianDiffusion(b.config.diffusion, b.split), features
    split, features = RegionSplit.contiguous(24, k_lip=13, k_eye=8), 160
    torch.manual_seed(0)
    den = Denoiser(DenoiserConfig(), split, features)
    torch.nn.init.normal_(den.out.weight, std=0.1)
    return den.eval(), GaussianDiffusion(DiffusionConfig(prediction="x0"), split), features


def window_fn(engine: str, bindable: object, den: Denoiser, diffusion: GaussianDiffusion,
              features: int, k: int, frames: int) -> Callable[[], torch.Tensor]:
    """A closure that samples k stacked windows with ``engine`` (inputs drawn once)."""
    n = den.split.num_dims
    g = torch.Generator().manual_seed(k * 1000 + frames)
    audio = torch.randn(k, frames, features, generator=g)
    cond, mask = torch.zeros(k, frames, n), torch.zeros(k, frames, n)
    cond[:, :PREFIX], mask[:, :PREFIX] = torch.randn(k, PREFIX, n, generator=g), 1.0
    sampler = make_sampler(diffusion, "ddim", STEPS, 0.4)

    def run() -> torch.Tensor:
        if engine == "forward":
            def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return cfg_eps(den, x, t, audio, cond, mask, GUIDANCE)
        else:
            guided = cfg_bind(bindable, audio, cond, mask, GUIDANCE)

        def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return diffusion.to_eps(x, t, guided(x, t))

        gen = torch.Generator().manual_seed(0)
        return sample(eps_fn, (k, frames, n), sampler, generator=gen, known=cond,
                      known_mask=mask, clip_x0=CLIP_X0)

    return run


def measure(engines: dict[str, object], den: Denoiser, diffusion: GaussianDiffusion,
            features: int, k: int, frames: int, repeats: int) -> dict[str, float]:
    """Median ms per sampled window group for each engine (after one warm-up call each)."""
    runs = {name: window_fn(name, b, den, diffusion, features, k, frames)
            for name, b in engines.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for run in runs.values():
            run()
        for _ in range(repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default=None, help="model bundle (default: random weights)")
    parser.add_argument("--threads", type=int, default=None, help="torch / ORT threads")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--streams", default="1,2,4,8")
    parser.add_argument("--compiled", action="store_true", help="also torch.compile (slow)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    den, diffusion, features = load(args.bundle)
    la = den.cfg.look_ahead
    engines: dict[str, object] = {"forward": den, "eager": den,
                                  "onnx": accelerate(den, "onnx", threads=args.threads),
                                  "auto": accelerate(den, "auto", threads=args.threads)}
    if args.compiled:
        engines["compiled"] = accelerate(den, "compiled")
    print(f"threads {torch.get_num_threads()}; ms per DDIM-{STEPS} + guidance window group")
    shapes = [(1, 160 + la)] + [(int(k), 16 + la) for k in args.streams.split(",")]
    for k, frames in shapes:
        ms = measure(engines, den, diffusion, features, k, frames, args.repeats)
        label = "offline" if frames > 100 else f"stream k={k}"
        print(f"{label:>12} [{2 * k}x{frames}]: "
              + "  ".join(f"{name} {v:7.1f}" for name, v in ms.items()), flush=True)
        if frames > 100:
            print("    est. offline RTF: " + "  ".join(
                f"{name} {2 * v / 8000:.4f}" for name, v in ms.items()), flush=True)


if __name__ == "__main__":
    main()
