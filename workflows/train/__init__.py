"""``disenttalk train``: the sync expert, then the denoiser with the frozen expert, on Ray Train.

The driver reads the fit outputs (region split, morphable model) and the training split's
expression arrays, computes the normalisation statistics (mean/std per expression dim over
every valid training frame), and starts one ``TorchTrainer`` run whose workers execute
:func:`workflows.train.loop.train_loop_per_worker`. Checkpoints go to
``<storage_path>/<run_name>``; starting the same command again (same name and storage)
resumes from the latest checkpoint, and ``FailureConfig(max_failures)`` restarts the
worker group from it after a worker dies. Rank 0 logs to MLflow and writes the model bundle
to ``<out>/bundle``.

Data: each worker reads its own share of the training clips (``clips[rank::world]``) from the
store URIs and samples W-frame windows with a generator seeded by (seed, rank, step). A step
budget over randomly placed windows of variable-length clips is what the paper's training
does; seeding by step makes a resumed run draw exactly the batches the lost one would have,
and no Ray Data tasks compete with the workers for CPUs while they train.

Modules: ``config`` (the stage config), ``driver`` (``run``, ``cli``), ``loop`` (the worker
loop), ``checkpoint`` (training state and checkpoint folders), ``data`` (clips, windows,
normalisation, corpus statistics), ``outputs`` (bundle, loss plot, MLflow artefacts).

Also a Ray job entrypoint: ``python -m workflows.train --data URI --fit URI --out URI``.
"""

from workflows.train.config import (
    RunSection,
    ScalingSection,
    TrainStageConfig,
    load_stage_config,
    model_config_for,
)
from workflows.train.driver import cli, run

__all__ = ["RunSection", "ScalingSection", "TrainStageConfig", "cli", "load_stage_config",
           "model_config_for", "run"]
