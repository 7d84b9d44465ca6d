"""Training state: the networks and optimisers of a worker, where training is, and the checkpoint
folders Ray Train keeps (``state.pt`` tensors, ``train_state.json`` progress, ``config.json``
the stage config they were trained with)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

PHASES = ("sync", "denoiser")
STATE_FILE = "state.pt"
META_FILE = "train_state.json"
CONFIG_FILE = "config.json"


@dataclass
class Progress:
    """Where training is: phase, step within it, and what to plot at the end."""

    phase: str = "sync"
    step: int = 0
    mlflow_run_id: str | None = None
    norm: dict[str, list[float]] | None = None  # expression mean/std per dim
    history: dict[str, list[list[float]]] = field(default_factory=lambda: {p: [] for p in PHASES})

    def global_step(self, sync_steps: int) -> int:
        """Steps done over both phases."""
        return self.step + (sync_steps if self.phase == "denoiser" else 0)


@dataclass
class Nets:
    """The networks and optimisers of one worker (a network may be wrapped by prepare_model)."""

    expert: torch.nn.Module
    denoiser: torch.nn.Module
    opt_expert: torch.optim.Optimizer
    opt_denoiser: torch.optim.Optimizer

    def state(self) -> dict[str, Any]:
        """Everything a checkpoint needs to continue (plain modules, not DDP wrappers)."""
        return {"expert": plain(self.expert).state_dict(),
                "denoiser": plain(self.denoiser).state_dict(),
                "opt_expert": self.opt_expert.state_dict(),
                "opt_denoiser": self.opt_denoiser.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""
        plain(self.expert).load_state_dict(state["expert"])
        plain(self.denoiser).load_state_dict(state["denoiser"])
        self.opt_expert.load_state_dict(state["opt_expert"])
        self.opt_denoiser.load_state_dict(state["opt_denoiser"])


def plain(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return getattr(module, "module", module)


def save_checkpoint(directory: Path, nets: Nets, progress: Progress, stage_json: str) -> None:
    """Write a checkpoint directory: tensors, progress JSON, and the stage config JSON."""
    torch.save(nets.state(), directory / STATE_FILE)
    (directory / META_FILE).write_text(json.dumps(asdict(progress)))
    (directory / CONFIG_FILE).write_text(stage_json)


def load_checkpoint(directory: Path, nets: Nets, model: dict | None = None) -> Progress:
    """Restore networks/optimisers from a checkpoint directory; returns its progress.

    ``model`` (the current config's model section) must match the checkpoint's: resuming a run
    whose network has changed is refused with a message, not a state-dict error.
    """
    saved = json.loads((directory / CONFIG_FILE).read_text()).get("model")
    if model is not None and saved is not None and saved != model:
        changed = sorted(k for k in set(saved) | set(model) if saved.get(k) != model.get(k))
        raise ValueError(
            f"cannot resume from {directory}: its model config differs in {changed}; "
            "use a new run.name (or run.storage_path) to train from scratch")
    nets.load(torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True))
    return Progress(**json.loads((directory / META_FILE).read_text()))
