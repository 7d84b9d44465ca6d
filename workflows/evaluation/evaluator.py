"""The evaluator sync expert: trained on ground-truth training clips only (its own seed, never a
training loss), cached in the output folder and reused while its inputs are unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from disenttalk.bundle import MORPHABLE, NORM, REGIONS
from workflows.evaluation.config import EvaluateConfig
from workflows.evaluation.lips import landmark_lips
from workflows.platform import clipstore, storage

# what the evaluator is built on: the morphable model, the region split, the normalisation
EVALUATOR_BASIS = (MORPHABLE, REGIONS, NORM)


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def evaluator_dir(data: str, out: str, basis: Path, cfg: EvaluateConfig, workdir: Path) -> Path:
    """A local folder with the evaluator expert: reused from ``<out>/evaluator`` when its key matches.

    ``basis`` is a folder with :data:`EVALUATOR_BASIS` (a bundle folder, or a sweep's shared basis):
    the morphable model, the region split whose lip dims the evaluator reads, and the
    normalisation. The evaluator keeps those lip dims, so bundles with other splits (a sweep's
    K_lip, the one-region ablation) are scored by the same yardstick."""
    train_rows = sorted(clipstore.read_index(data, "train"), key=lambda r: r["clip_id"])
    pieces = [(basis / n).read_bytes() for n in EVALUATOR_BASIS]
    key = _digest(cfg.evaluator.to_json(), *pieces, *(r["content_hash"] for r in train_rows))
    cached = storage.join(out, "evaluator")
    local = workdir / "evaluator"
    meta_uri = storage.join(cached, "evaluator.json")
    if storage.exists(meta_uri) and json.loads(storage.read_text(meta_uri)).get("key") == key:
        return storage.download_dir(cached, local)
    if not train_rows:
        raise ValueError(f"{data}: no train clips to fit the evaluator sync expert on")
    _train(data, train_rows, basis, cfg, key, local)
    storage.upload_dir(local, cached)
    return local


def _train(data: str, train_rows: list[dict], basis: Path, cfg: EvaluateConfig, key: str, local: Path) -> None:
    """Fit the evaluator on the training clips' audio and tracked lips; save it to ``local``."""
    from disenttalk.audio import make_frontend
    from disenttalk.face.morphable import MorphableModel
    from disenttalk.face.regions import RegionSplit
    from disenttalk.metrics.sync import save_evaluator, train_evaluator

    morphable_file, regions_file, norm_file = (basis / n for n in EVALUATOR_BASIS)
    morphable = MorphableModel.load(morphable_file)
    lip_dims = RegionSplit.load(regions_file).lip
    with np.load(norm_file) as npz:
        norm = {k: npz[k] for k in npz.files}
    frontend = make_frontend(cfg.evaluator.audio)
    seqs = []
    for row in tqdm(train_rows, desc="evaluator data"):
        rec = clipstore.read_record(data, row)
        lip = landmark_lips(rec.landmarks, morphable, lip_dims, norm)
        seqs.append((frontend(rec.audio, rec.sample_rate, num_frames=len(lip)), lip))
    expert, log = train_evaluator(seqs, cfg.evaluator)
    save_evaluator(local, expert, cfg.evaluator, norm,
                   {"key": key, "lip_dims": list(lip_dims), "train_clips": len(seqs),
                    "final": log[-1] if log else {}})
