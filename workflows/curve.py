"""``disenttalk curve``: the learning curve of a training run, read from its kept checkpoints.

Each denoiser checkpoint of a ``disenttalk train`` output is put into that run's bundle (same
config, regions, normalisation, morphable model, blinks and sampler settings) and scored on a
split's clips the way evaluate scores decoded landmarks: the generated expression decoded with
the clip's own identity and pose against the tracked truth (mouth LMD), beside a still face and
the truth's own encoded motion (the oracle), and ``gap_closed`` = (still − model) /
(still − oracle). No rendering: a checkpoint takes seconds, so a curve of ten costs about a
minute of CPU. Writes ``curve.json``, ``curve.csv`` and ``curve.png`` into ``--out``.

Keep every checkpoint for a curve with ``--set run.num_to_keep=<n>`` when training.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from typing import Any

import numpy as np
import typer

from workflows.evaluation import clip_seed, fill_gaps, gap_closed
from workflows.platform import clipstore, storage

CHECKPOINT = re.compile(r"denoiser-(\d+)$")


def denoiser_checkpoints(root: str) -> list[tuple[int, str]]:
    """(step, state-file URI) of every denoiser checkpoint under ``root``, by step."""
    from workflows.train.checkpoint import STATE_FILE

    found = {}
    for uri in storage.list_files(root, suffix=STATE_FILE):
        match = CHECKPOINT.search(storage.parent(uri).rstrip("/"))
        if match:
            found[int(match.group(1))] = uri
    return sorted(found.items())


def decoded_scores(gen: Any, records: list[Any], steps: int | None, seed: int) -> dict[str, float]:
    """Mean decoded mouth LMD of ``gen``'s motion, a still face and the oracle over ``records``,
    and the gap the model closes."""
    from disenttalk.metrics import baselines
    from disenttalk.metrics.landmarks import lmd

    morphable = gen.bundle.morphable
    sums = {"model": [], "still": [], "oracle": []}
    for rec in records:
        t, fps = rec.num_frames, float(rec.fps)
        truth = fill_gaps(rec.landmarks[:t])
        expression, pose, identity = morphable.encode(truth)
        audio = rec.audio[: int(round(t / fps * rec.sample_rate))]
        motion = gen.motion(audio, rec.sample_rate, steps=steps, seed=clip_seed(seed, rec.clip_id))
        for name, expr in (("model", motion.expression), ("still", baselines.still(expression)),
                           ("oracle", expression)):
            n = min(len(expr), t)
            sums[name].append(lmd(morphable.decode(expr[:n], pose[:n], identity), truth[:n]))
    out = {f"lmd_{k}": float(np.mean(v)) for k, v in sums.items()}
    out["gap_closed"] = gap_closed(out["lmd_model"], out["lmd_still"], out["lmd_oracle"])
    return out


def run(train: str, data: str, split: str = "val", max_clips: int = 12, steps: int | None = None,
        seed: int = 0, checkpoints: str | None = None) -> list[dict[str, Any]]:
    """One point per denoiser checkpoint of the training output ``train`` (its bundle and, by
    default, the checkpoints under ``<train>/ray``); scored on ``split`` of the store ``data``."""
    import torch

    from disenttalk.bundle import BundleError, load_bundle
    from disenttalk.generate.generator import Generator
    from workflows.register import resolve_bundle
    from workflows.train.outputs import BUNDLE

    bundle_uri = storage.join(train, BUNDLE)
    try:
        bundle = load_bundle(resolve_bundle(bundle_uri))
    except (BundleError, FileNotFoundError) as exc:
        raise ValueError(f"{train}: no readable bundle ({exc}); is it a `disenttalk train` output?") from exc
    if bundle.morphable is None:
        raise ValueError(f"{bundle_uri}: a bundle without a morphable model cannot be scored on landmarks")
    found = denoiser_checkpoints(checkpoints or storage.join(train, "ray"))
    if not found:
        raise ValueError(f"no denoiser checkpoints under {checkpoints or storage.join(train, 'ray')}")
    rows = sorted(clipstore.read_index(data, split), key=lambda r: r["clip_id"])[:max_clips]
    if not rows:
        raise ValueError(f"{data}: no clips in split {split!r}")
    records = [clipstore.read_record(data, r) for r in rows]
    gen = Generator(bundle)
    points = []
    for step, uri in found:
        state = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)
        gen.denoiser.load_state_dict(state["denoiser"])
        point = {"step": step, "clips": len(records), **decoded_scores(gen, records, steps, seed)}
        points.append(point)
        typer.echo(f"  step {step:6d}  lmd {point['lmd_model']:.4f}  gap_closed {point['gap_closed']:.3f}")
    return points


def figure(points: list[dict[str, Any]], split: str):
    """Mouth LMD (model, still, oracle) and gap_closed against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    steps = [p["step"] for p in points]
    fig = Figure(figsize=(9, 3.5), dpi=100)
    left, right = fig.subplots(1, 2)
    for name, style in (("model", "o-"), ("still", "--"), ("oracle", ":")):
        left.plot(steps, [p[f"lmd_{name}"] for p in points], style, label=name, markersize=3)
    left.set_title(f"decoded mouth LMD ({split})")
    left.legend()
    right.plot(steps, [p["gap_closed"] for p in points], "o-", markersize=3)
    right.set_title("gap_closed (decoded)")
    right.set_ylim(min([0.0, *(p["gap_closed"] for p in points if math.isfinite(p["gap_closed"]))]), 1.0)
    for ax in (left, right):
        ax.set_xlabel("denoiser step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write(points: list[dict[str, Any]], out: str, split: str) -> None:
    """``curve.json``, ``curve.csv`` and ``curve.png`` under ``out`` (local or s3://)."""
    storage.write_text(storage.join(out, "curve.json"), json.dumps({"split": split, "points": points}, indent=1))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(points[0]))
    writer.writeheader()
    writer.writerows(points)
    storage.write_text(storage.join(out, "curve.csv"), text.getvalue())
    png = io.BytesIO()
    figure(points, split).savefig(png, format="png")
    storage.write_bytes(storage.join(out, "curve.png"), png.getvalue())


def learning_curve(train: str, data: str, out: str | None = None, **options: Any) -> list[dict[str, Any]]:
    """:func:`run` (``options`` as there) and :func:`write` to ``out`` (default ``<train>/curve``)."""
    points = run(train, data, **options)
    write(points, out or storage.join(train, "curve"), options.get("split", "val"))
    return points


def cli(
    train: str = typer.Option(..., help="a `disenttalk train` output folder (local or s3://)"),
    data: str = typer.Option(..., help="the clip store it was trained on"),
    split: str = typer.Option("val", help="split to score"),
    max_clips: int = typer.Option(12, min=1, help="clips of the split (sorted by id)"),
    steps: int | None = typer.Option(None, help="sampler steps (default: DDIM 10, quadratic)"),
    seed: int = typer.Option(0),
    checkpoints: str | None = typer.Option(None, help="where the checkpoints are (default <train>/ray)"),
    out: str | None = typer.Option(None, help="output folder (default <train>/curve)"),
) -> None:
    """Learning curve of a training run: lip error of each kept denoiser checkpoint."""
    try:
        points = learning_curve(train, data, out, split=split, max_clips=max_clips, steps=steps,
                                seed=seed, checkpoints=checkpoints)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"disenttalk curve: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"curve of {len(points)} checkpoints → {out or storage.join(train, 'curve')}/curve.png")


if __name__ == "__main__":  # python -m workflows.curve
    typer.run(cli)
