"""The model bundle: one directory that fully describes a trained system (docs/design.md §3).

Layout::

    config.json      ModelConfig (audio frontend, denoiser, diffusion, sync, N, K_lip, K_eye)
    morphable.npz    the morphable model (optional: without it a bundle makes motion, not video)
    regions.json     RegionSplit (lip / eye / global dims and their scores)
    norm.npz         mean [N], std [N] of the expression parameters the denoiser was trained on
    sync_expert.pt   SyncExpert state dict
    denoiser.pt      Denoiser state dict
    meta.json        versions, created_at, optional metrics / extra fields
    blinks.npz       optional: the training clips' blinks: ``direction`` [K_eye] (eye dims of a
                     closed eye minus an open one, parameter units) and ``curves`` [M,L] (closure
                     0..1 over time, NaN past a curve's end), the blinks generation adds by default

A bundle is written to a temporary sibling directory and renamed into place, so a reader never
sees half a bundle; :func:`load_bundle` checks every piece and names the one that is wrong.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from disenttalk.face.regions import RegionSplit
from disenttalk.model.config import ModelConfig

if TYPE_CHECKING:  # torch loads when a bundle is written or read, not with its names
    import torch

FORMAT_VERSION = 1
# the bundle's files (the layout above); every reader and writer names them through these
CONFIG = "config.json"
REGIONS = "regions.json"
NORM = "norm.npz"
EXPERT = "sync_expert.pt"
DENOISER = "denoiser.pt"
META = "meta.json"
MORPHABLE = "morphable.npz"
BLINKS = "blinks.npz"
REQUIRED = (CONFIG, REGIONS, NORM, EXPERT, DENOISER, META)


class BundleError(ValueError):
    """A bundle directory is missing a piece or holds a corrupt or inconsistent one."""


@dataclass
class Bundle:
    """A loaded bundle: configs, arrays and state dicts (networks are built by the Generator)."""

    path: Path
    config: ModelConfig
    split: RegionSplit
    norm: dict[str, np.ndarray]  # mean [N], std [N], float32
    expert_state: dict[str, torch.Tensor]
    denoiser_state: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    morphable: Any = None  # disenttalk.face.morphable.MorphableModel | None
    blinks: dict[str, np.ndarray] | None = None  # direction [K_eye], curves [M,L]; see above

    @property
    def num_dims(self) -> int:
        """N, the expression dimensionality."""
        return self.split.num_dims


def _versions() -> dict[str, str]:
    import torch

    import disenttalk

    return {"disenttalk": disenttalk.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _check_norm(norm: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    out = {}
    for key in ("mean", "std"):
        if key not in norm:
            raise BundleError(f"norm: missing {key!r}")
        value = np.asarray(norm[key], dtype=np.float32)
        if value.shape != (n,):
            raise BundleError(f"norm: {key} has shape {value.shape}, expected ({n},)")
        if not np.all(np.isfinite(value)):
            raise BundleError(f"norm: {key} has non-finite values")
        out[key] = value
    if np.any(out["std"] <= 0):
        raise BundleError("norm: std must be positive")
    return out


def _check_blinks(blinks: dict[str, np.ndarray], k_eye: int) -> dict[str, np.ndarray]:
    try:
        direction = np.asarray(blinks["direction"], dtype=np.float32)
        curves = np.asarray(blinks["curves"], dtype=np.float32)
    except KeyError as exc:
        raise BundleError(f"{BLINKS}: missing {exc}") from None
    if direction.shape != (k_eye,) or curves.ndim != 2 or curves.shape[0] < 1 or curves.shape[1] < 2:
        raise BundleError(f"{BLINKS}: direction {direction.shape} / curves {curves.shape}, "
                          f"expected ({k_eye},) / [M,L]")
    finite = np.isfinite(curves)
    # each curve: closures in 0..1, then NaN padding to the longest (a curve of ≥ 2 frames)
    if not (np.all(np.isfinite(direction)) and np.all(finite[:, :2])
            and np.all(finite[:, :-1] | ~finite[:, 1:]) and np.all((curves[finite] >= 0) & (curves[finite] <= 1))):
        raise BundleError(f"{BLINKS}: non-finite direction, or closures not 0..1 followed by NaN padding")
    return {"direction": direction, "curves": curves}


def _check_consistent(config: ModelConfig, split: RegionSplit) -> None:
    if split.num_dims != config.n_expression:
        raise BundleError(f"regions: {split.num_dims} dims, config says n_expression={config.n_expression}")
    if (len(split.lip), len(split.eye)) != (config.k_lip, config.k_eye):
        raise BundleError(f"regions: K_lip={len(split.lip)}, K_eye={len(split.eye)}; "
                          f"config says {config.k_lip}, {config.k_eye}")


def update_meta(path: str | Path, **fields: Any) -> dict[str, Any]:
    """Set ``fields`` in a bundle's meta.json (atomic replace); returns the new meta."""
    file = Path(path) / META
    if not file.is_file():
        raise BundleError(f"{path}: no {META} (not a bundle folder)")
    meta = {**json.loads(file.read_text()), **fields}
    tmp = file.with_name(f".{META}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    tmp.replace(file)
    return meta


def write_bundle(path: str | Path, *, config: ModelConfig, morphable: Any | None, split: RegionSplit,
                 norm: dict[str, np.ndarray], expert_state: dict[str, torch.Tensor],
                 denoiser_state: dict[str, torch.Tensor], extra: dict[str, Any] | None = None,
                 blinks: dict[str, np.ndarray] | None = None, overwrite: bool = False) -> Path:
    """Write a bundle directory atomically (temp dir + rename); ``extra`` goes into meta.json."""
    import torch

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    _check_consistent(config, split)
    norm = _check_norm(norm, split.num_dims)
    if blinks is not None:
        blinks = _check_blinks(blinks, len(split.eye))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        config.save(tmp / CONFIG)
        split.save(tmp / REGIONS)
        np.savez(tmp / NORM, **norm)
        torch.save({k: v.detach().cpu() for k, v in expert_state.items()}, tmp / EXPERT)
        torch.save({k: v.detach().cpu() for k, v in denoiser_state.items()}, tmp / DENOISER)
        if morphable is not None:
            morphable.save(tmp / MORPHABLE)
        if blinks is not None:
            np.savez(tmp / BLINKS, **blinks)
        meta = {"format_version": FORMAT_VERSION, "versions": _versions(),
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                "has_morphable": morphable is not None, **(extra or {})}
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if path.exists():  # replace: move the old bundle aside first, then drop it
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _load_state(file: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BundleError(f"{file.name}: not a readable torch state dict ({exc})") from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise BundleError(f"{file.name}: expected a dict of tensors")
    return state


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate a bundle directory written by :func:`write_bundle`."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle directory")
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: missing {', '.join(missing)}")
    try:
        meta = json.loads((path / META).read_text())
        config = ModelConfig.load(path / CONFIG)
        split = RegionSplit.load(path / REGIONS)
    except Exception as exc:  # JSON errors, ConfigError, bad region indices
        raise BundleError(f"{path}: {exc}") from exc
    if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise BundleError(f"{path}: format_version {meta['format_version']} is newer than "
                          f"this library reads ({FORMAT_VERSION})")
    _check_consistent(config, split)
    try:
        with np.load(path / NORM) as data:
            norm = {k: data[k] for k in data.files}
    except Exception as exc:
        raise BundleError(f"{NORM}: unreadable ({exc})") from exc
    norm = _check_norm(norm, split.num_dims)
    morphable = None
    if (path / MORPHABLE).is_file():
        from disenttalk.face.morphable import MorphableModel

        try:
            morphable = MorphableModel.load(path / MORPHABLE)
        except Exception as exc:
            raise BundleError(f"{MORPHABLE}: unreadable ({exc})") from exc
    elif meta.get("has_morphable"):
        raise BundleError(f"{path}: missing {MORPHABLE} ({META} says it was written)")
    blinks = None
    if (path / BLINKS).is_file():
        try:
            with np.load(path / BLINKS, allow_pickle=False) as data:
                blinks = {k: data[k] for k in data.files}
        except Exception as exc:
            raise BundleError(f"{BLINKS}: unreadable ({exc})") from exc
        blinks = _check_blinks(blinks, len(split.eye))
    return Bundle(path=path, config=config, split=split, norm=norm,
                  expert_state=_load_state(path / EXPERT),
                  denoiser_state=_load_state(path / DENOISER), meta=meta, morphable=morphable,
                  blinks=blinks)


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> torch.nn.Module:
    """``load_state_dict`` (strict) with an error that says which bundle piece does not fit."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise BundleError(f"{name}: weights do not match the configured network ({exc})") from exc
    return module.eval()
