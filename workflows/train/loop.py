"""The Ray Train worker loop of ``disenttalk train``: sync expert phase, then denoiser phase.

Thin by design: build the networks, restore the latest checkpoint, then per step draw a batch
from this worker's clips and call the pure step from :mod:`disenttalk.model.train`. Every
``checkpoint_every`` steps (and at the end of each phase) all workers ``report``; rank 0
attaches the checkpoint (networks, optimisers, phase, step, loss history, MLflow run id, and
the stage config JSON beside them). Rank 0 alone talks to MLflow and writes the bundle.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workflows.train import data as train_data
from workflows.train.checkpoint import (
    PHASES,
    Nets,
    Progress,
    load_checkpoint,
    plain,
    save_checkpoint,
)
from workflows.train.config import LoopInputs
from workflows.train.distributed import average_gradients, check_replicas_equal, world_mean

log = logging.getLogger(__name__)


def _step_seed(seed: int, rank: int, phase: str, step: int) -> int:
    """A distinct, reproducible seed per (run seed, worker, phase, step)."""
    return int(np.random.SeedSequence([seed, rank, PHASES.index(phase), step]).generate_state(1)[0])


def _to_torch(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


class Loop:
    """One worker's training run; see the module docstring."""

    def __init__(self, inputs: LoopInputs) -> None:
        import ray.train
        import ray.train.torch

        from disenttalk.model.denoiser import Denoiser
        from disenttalk.model.diffusion import GaussianDiffusion
        from disenttalk.model.sync import SyncExpert
        self.inputs = inputs
        self.stage, self.model = inputs.stage, inputs.model
        # what actually trains: the stage config with N, K_lip, K_eye taken from the fit
        self.effective = self.stage.model_copy(update={"model": self.model})
        self.train = self.stage.train
        self.split = inputs.split
        self.norm = {k: np.asarray(v, dtype=np.float32) for k, v in inputs.norm.items()}
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        torch.set_num_threads(max(1, int(self.stage.scaling.cpus_per_worker)))

        f = inputs.feature_dim
        # on the device before the optimisers exist, so restored Adam state lands beside them
        expert = SyncExpert(self.model.sync, audio_dim=f, lip_dim=len(self.split.lip)).to(self.device)
        denoiser = Denoiser(self.model.denoiser, self.split, audio_dim=f).to(self.device)
        self.nets = Nets(expert, denoiser,
                         torch.optim.Adam(expert.parameters(), lr=self.train.sync_lr),
                         torch.optim.Adam(denoiser.parameters(), lr=self.train.lr))
        self.progress = Progress()
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                self.progress = load_checkpoint(Path(directory), self.nets,
                                                self.model.to_dict())
        self.resumed_from = self.progress.global_step(self.train.sync_steps)
        if self.progress.norm:  # a resumed network keeps the statistics it was trained with
            self.norm = {k: np.asarray(v, dtype=np.float32) for k, v in self.progress.norm.items()}
        self.progress.norm = {k: v.tolist() for k, v in self.norm.items()}
        self.sampler, self.val_sampler = self._samplers()
        self.diffusion = GaussianDiffusion(self.model.diffusion, self.split).to(self.device)
        self.lip_error = self._lip_error()
        self.tracker = _Tracker(self) if self.rank == 0 else None

    def _samplers(self) -> tuple[train_data.WindowSampler, train_data.WindowSampler | None]:
        """Windows over this worker's share of the training clips; rank 0 also validation."""
        data, fit = self.inputs.data, self.inputs.fit
        rows = train_data.shard_rows(self.inputs.train_rows, self.rank, self.world)
        clips = [train_data.load_clip(data, fit, r) for r in rows]
        augment = self.stage.augment
        # the model's audio settings are the preprocess stage's (checked by the driver), so the
        # variants' features come from the frontend that made the stored ones
        stats = train_data.add_variants(clips, augment, self.model.audio, self.train.seed)
        if augment.active:
            log.info("augment: rank %d made %d of %d variants of %d clips in %.2f s "
                     "(stored-feature gap %.2g)", self.rank, stats["made"], stats["variants"],
                     stats["clips"], stats["seconds"], stats["feature_gap"])
        self.augment_stats = stats
        sampler = train_data.WindowSampler(clips, self.train.window, self.norm,
                                           keep_prob=augment.keep_prob if augment.active else 1.0)
        if self.rank != 0 or not self.inputs.val_rows or not self.stage.run.val_batches:
            return sampler, None
        val = [train_data.load_clip(data, fit, r) for r in self.inputs.val_rows]
        try:
            return sampler, train_data.WindowSampler(val, self.train.window, self.norm)
        except ValueError:  # validation clips shorter than a window: no validation
            return sampler, None

    def _lip_error(self):
        """Rank 0's sampled-lip validation (needs validation windows and a morphable model)."""
        from workflows.train.outputs import read_morphable
        from workflows.train.validation import LipError

        if self.val_sampler is None:
            return None
        morphable = read_morphable(self.inputs.fit)
        if morphable is None:
            return None
        return LipError(self.val_sampler, morphable, self.norm, self.train.batch_size, self.device)

    # -- phases ----------------------------------------------------------------------------
    def run(self) -> None:
        """Both phases from wherever the checkpoint left off, then the bundle (rank 0)."""
        import ray.train.torch

        if self.progress.phase == "sync":
            # The expert's step calls embed_audio / embed_lip rather than forward, which is
            # where DDP hooks in, so its replicas average gradients themselves.
            expert = ray.train.torch.prepare_model(self.nets.expert, parallel_strategy=None)
            handle = average_gradients(expert)
            self._phase("sync", self.train.sync_steps, self._sync_step, self._sync_eval)
            handle.remove()
            check_replicas_equal(expert)
            self.progress = replace(self.progress, phase="denoiser", step=0)
        expert = plain(self.nets.expert).to(self.device).eval()
        expert.requires_grad_(False)  # frozen: only a critic of the denoiser's lip motion
        self.frozen_expert = expert
        # Every parameter gets a gradient each step (the null-audio embedding too: it is selected
        # per sample by torch.where, so it is in the graph even when no sample is dropped), so DDP
        # needs no unused-parameter search, which costs a graph traversal per step.
        self.nets.denoiser = ray.train.torch.prepare_model(self.nets.denoiser)
        self._phase("denoiser", self.train.denoiser_steps, self._denoiser_step,
                    self._denoiser_eval)
        if self.rank == 0:
            from workflows.train.outputs import write_outputs

            write_outputs(self, self.tracker.run if self.tracker else None)

    def _phase(self, phase: str, steps: int, step_fn, eval_fn) -> None:
        """Steps ``progress.step .. steps-1`` of one phase, reporting every checkpoint_every."""
        every = self.stage.run.checkpoint_every
        window_loss: list[float] = []
        bar = self._progress_bar(phase, steps)
        while self.progress.step < steps:
            step = self.progress.step
            rng = np.random.default_rng(_step_seed(self.train.seed, self.rank, phase, step))
            gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**62)))
            batch = _to_torch(self.sampler.sample(self.train.batch_size, rng), self.device)
            optimizer, base = ((self.nets.opt_expert, self.train.sync_lr) if phase == "sync"
                               else (self.nets.opt_denoiser, self.train.lr))
            lr = self.train.lr_at(base, step, steps)  # a pure function of the step: resumes agree
            for group in optimizer.param_groups:
                group["lr"] = lr
            metrics = step_fn(batch, gen) | {"lr": lr}
            self.progress.step = step + 1
            window_loss.append(float(metrics["loss"]))
            if bar is not None:
                bar.set_description(f"{phase:8s} loss {np.mean(window_loss[-20:]):.3f}")
                bar.update(1)
            if self.tracker is not None and (step + 1) % self.stage.run.log_every == 0:
                self.tracker.log({f"{phase}/{k}": v for k, v in metrics.items()}, step + 1, phase)
            if (step + 1) % every and step + 1 != steps:
                continue
            self._report(phase, step + 1, window_loss, eval_fn)
            window_loss = []
        if bar is not None:
            bar.close()

    def _progress_bar(self, phase: str, steps: int):
        """Rank 0's bar, drawn by the driver (Ray's distributed tqdm), not in worker logs."""
        if self.rank != 0:
            return None
        from ray.experimental.tqdm_ray import tqdm

        bar = tqdm(desc=f"{phase:8s}", total=steps, unit="step")
        bar.n = self.progress.step  # a resumed run starts where its checkpoint left off
        return bar

    def _report(self, phase: str, step: int, window_loss: list[float], eval_fn) -> None:
        """Every worker reports the window's mean loss; rank 0 adds validation and the checkpoint."""
        import ray.train

        val = eval_fn() if self.rank == 0 else {}
        report = {"phase": phase, "step": step,
                  "global_step": self.progress.global_step(self.train.sync_steps),
                  "resumed_from_step": self.resumed_from,
                  "loss": world_mean(float(np.mean(window_loss)), self.device),
                  # this worker's augmented variants and the seconds it took to make them
                  "augment_variants": self.augment_stats["variants"],
                  "augment_seconds": round(self.augment_stats["seconds"], 3),
                  **{f"val_{k}": v for k, v in val.items()}}
        self.progress.history[phase].append([step, report["loss"]])
        if self.tracker is None:
            ray.train.report(report)
            return
        report["mlflow_run_id"] = self.progress.mlflow_run_id
        self.tracker.log({f"{phase}/{k}": report[k] for k in report if k.startswith("val_")},
                         step, phase)
        with tempfile.TemporaryDirectory() as directory:
            save_checkpoint(Path(directory), self.nets, self.progress, self.effective.to_json())
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(directory),
                             checkpoint_dir_name=f"{phase}-{step:07d}")

    # -- steps (pure functions from the core) ------------------------------------------------
    def _sync_step(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, float]:
        from disenttalk.model.train import sync_train_step

        return sync_train_step(self.nets.expert, batch, self.nets.opt_expert, gen, split=self.split,
                               grad_clip=self.train.grad_clip)

    def _denoiser_step(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, float]:
        from disenttalk.model.train import denoiser_train_step

        return denoiser_train_step(
            self.nets.denoiser, self.diffusion, batch, self.nets.opt_denoiser, split=self.split,
            expert=self.frozen_expert, sync_weight=self.train.sync_weight,
            audio_drop_prob=self.train.audio_drop_prob, generator=gen,
            prefix_prob=self.train.prefix_prob, max_prefix=self.train.max_prefix,
            region_prob=self.train.region_prob, grad_clip=self.train.grad_clip,
            lip_weight=self.train.lip_weight, velocity_weight=self.train.velocity_weight)

    def _val_batches(self):
        for i in range(self.stage.run.val_batches):
            rng = np.random.default_rng([self.train.seed, 7919, i])  # the same windows every time
            gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**62)))
            yield _to_torch(self.val_sampler.sample(self.train.batch_size, rng), self.device), gen

    def _sync_eval(self) -> dict[str, float]:
        from disenttalk.model.train import sync_eval_step

        if self.val_sampler is None:
            return {}
        out = [sync_eval_step(plain(self.nets.expert), b, g, split=self.split)
               for b, g in self._val_batches()]
        return _mean_dicts(out)

    def _denoiser_eval(self) -> dict[str, float]:
        from disenttalk.model.train import denoiser_eval_step

        if self.val_sampler is None:
            return {}
        out = [denoiser_eval_step(plain(self.nets.denoiser), self.diffusion, b, split=self.split,
                                  expert=self.frozen_expert, sync_weight=self.train.sync_weight,
                                  generator=g, lip_weight=self.train.lip_weight,
                                  velocity_weight=self.train.velocity_weight)
               for b, g in self._val_batches()]
        result = _mean_dicts(out)
        if self.lip_error is not None:
            result["lip_error"] = self.lip_error(plain(self.nets.denoiser), self.diffusion)
        return result


def _mean_dicts(items: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in items[0] if isinstance(items[0][k], (int, float))] if items else []
    return {k: float(np.mean([d[k] for d in items])) for k in keys}


class _Tracker:
    """Rank 0's MLflow run: reopened by id after a restart, so one run covers the whole job."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.run = None
        if not loop.stage.mlflow.enabled:
            return
        import mlflow

        from workflows.platform import tracking

        tracking.setup(loop.stage.mlflow.experiment)
        run_id = loop.progress.mlflow_run_id
        name = loop.stage.mlflow.run_name or loop.stage.run.name
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else name,
                                    parent_run_id=None if run_id else loop.stage.mlflow.parent_run_id)
        if run_id is None:
            loop.progress.mlflow_run_id = self.run.info.run_id
            mlflow.log_params(tracking.config_params(loop.effective))
            mlflow.log_params({k: getattr(loop.inputs, k) for k in ("data", "fit", "out")})
            mlflow.set_tags({"stage": "train"})
        else:
            mlflow.set_tag("resumed_from_step", str(loop.resumed_from))

    def log(self, metrics: dict[str, Any], step: int, phase: str) -> None:
        """Numeric metrics at the phase's global step."""
        if self.run is None:
            return
        import mlflow

        offset = self.loop.train.sync_steps if phase == "denoiser" else 0
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        mlflow.log_metrics(numeric, step=step + offset)


def quiet_train_reports() -> None:
    """Keep Ray Train's per-report INFO line ("Reporting training result N: ...") off the console
    unless ``DISENTTALK_VERBOSE`` is set. ``RunConfig.logging_config`` quiets Ray Train's other
    INFO lines, but this one is logged under the module's file path instead of a ``ray.train``
    name, so the level set there does not reach it."""
    import logging
    import os

    from disenttalk.face.tracker import VERBOSE_ENV

    if os.environ.get(VERBOSE_ENV):
        return
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray Train layout: nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, LoopInputs]) -> None:
    """Ray Train entry point of every worker."""
    quiet_train_reports()
    loop = Loop(config["inputs"])
    try:
        loop.run()
    except BaseException:
        if loop.tracker is not None and loop.tracker.run is not None:
            import mlflow

            mlflow.end_run("FAILED")  # a retry reopens it by id from the checkpoint
        raise
