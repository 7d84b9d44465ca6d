"""End of ``disenttalk train`` on rank 0: the model bundle, the loss plot, MLflow artifacts."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workflows.platform import clipstore, storage
from workflows.train import data as train_data

if TYPE_CHECKING:
    from workflows.train.loop import Loop

BUNDLE = "bundle"
LOSS_PLOT = "loss.png"


def read_morphable(fit: str) -> Any | None:
    """The fitted morphable model, or None for a fit without one (motion-only bundles)."""
    from workflows import fit as fit_stage

    if not storage.exists(storage.join(fit, fit_stage.MORPHABLE)):
        return None
    return fit_stage.read_morphable(fit)


def loss_figure(history: dict[str, list[list[float]]]):
    """Training loss per phase against its step (one panel per phase)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), dpi=100)
    axes = fig.subplots(1, len(history))
    for ax, (phase, points) in zip(list(axes), history.items(), strict=True):
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, marker="o", markersize=3)
        ax.set_title(f"{phase} loss")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_outputs(loop: Loop, run: Any | None) -> str:
    """Write ``<out>/bundle`` (+ loss plot) and log both to the open MLflow run; returns the URI."""
    from disenttalk.bundle import write_bundle
    from workflows.train.checkpoint import plain

    out = loop.inputs.out
    target = storage.join(out, BUNDLE)
    extra = {"train": {"sync_steps": loop.train.sync_steps,
                       "denoiser_steps": loop.train.denoiser_steps,
                       "mlflow_run_id": loop.progress.mlflow_run_id,
                       "history": loop.progress.history}}
    # the corpus statistics a bundle carries come from every training clip (loop.sampler holds
    # only this rank's share)
    data, fit = loop.inputs.data, loop.inputs.fit
    framing = clipstore.read_framing(data)
    if framing:
        extra["framing"] = framing
    clips = [train_data.load_clip(data, fit, r) for r in loop.inputs.train_rows]
    if loop.model.audio.frontend == "mel":  # quiet frames are found by log-mel energy
        rest = train_data.rest_expression(clips)
        if rest is not None:
            extra["rest_expression"] = rest.tolist()
    morphable = read_morphable(fit)
    blinks = train_data.blink_model(clips, list(loop.split.eye), morphable) if morphable is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp, BUNDLE) if storage.is_s3(out) else Path(target)
        write_bundle(local, config=loop.model, morphable=morphable,
                     split=loop.split, norm=loop.norm,
                     expert_state=plain(loop.nets.expert).state_dict(),
                     denoiser_state=plain(loop.nets.denoiser).state_dict(),
                     extra=extra, blinks=blinks, overwrite=True)
        if storage.is_s3(out):
            storage.upload_dir(local, target)
        fig = loss_figure(loop.progress.history)
        plot = Path(tmp, LOSS_PLOT)
        fig.savefig(plot)
        storage.write_bytes(storage.join(out, LOSS_PLOT), plot.read_bytes())
        # the statistics the networks were trained with (a resumed run keeps its checkpoint's)
        storage.write_text(storage.join(out, "norm.json"),
                           json.dumps({k: v.tolist() for k, v in loop.norm.items()}))
        if run is not None:
            import mlflow

            mlflow.log_artifacts(str(local), artifact_path=BUNDLE)
            mlflow.log_artifact(str(plot))
            mlflow.end_run()
    return target
