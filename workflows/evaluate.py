"""``disenttalk evaluate``: score a model bundle on held-out clips, with baselines, on Ray.

For each clip of ``val``, ``test`` (also per language, as ``test/<lang>``) and ``test_xling``
(capped per split): generate motion from the clip's audio, render it onto a reference image of
the speaker, re-track the rendered video and score it against the truth (``disenttalk.metrics``).
The reference is the speaker's photo when the corpus manifest names one (``portrait``), as a user
would give a photo, else the clip's first frame (``reference`` in the config). A first frame of
a *rendered* clip makes a poor reference: its mouth is already a warp of the photo's, and warping
it again leaves the photo's lip line showing above the painted mouth, which re-tracking follows.
A second generation with the source's own pose and eyes gives PSNR/SSIM. The truth itself,
a still face and the truth delayed by 0.5 s are scored on the same clips. Lip sync is measured
by an *evaluator* sync expert trained here on ground-truth training clips only (its own seed,
never a training loss) and cached in the output folder.

Outputs under ``--out``: ``metrics.json`` ({split: {metric: value}}), ``baselines.json``
({baseline: {split: {metric: value}}}), ``clips.json`` (per clip), ``metrics.md``, plots
(``plots/<split>_{ear,mouth,change}.png``) and ``evaluator/`` (the sync expert); all logged to
MLflow (metrics as ``<split>/<metric>``).
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import typer
from pydantic import Field
from tqdm import tqdm

from disenttalk.config import StrictConfig
from disenttalk.metrics.sync import EvaluatorConfig
from workflows.common import user_errors
from workflows.platform import clipstore, storage
from workflows.platform.raycluster import RayConfig
from workflows.platform.tracking import MlflowConfig
from workflows.register import resolve_bundle

SYSTEM = "model"
# scored like the model: "truth" (the clip itself), "oracle" (the truth's motion encoded with the
# bundle's morphable model and rendered + re-tracked exactly like the model's: the best the
# model could score through this render path), "still" (no motion), "shifted" (truth delayed)
REFERENCES = ("truth", "oracle", "still", "shifted")


def clip_seed(seed: int, clip_id: str) -> int:
    """The sampler seed of one clip: ``seed`` plus a number from its id, so clips scored together
    do not share their noise, nor (the seed picks them) the corpus blinks' timing."""
    return int(seed) + zlib.crc32(clip_id.encode()) % 100_000


def gap_closed(model: float, still: float, oracle: float) -> float:
    """(still − model) / (still − oracle): 0 = no better than a still face, 1 = as good as the
    truth's own motion through the same render path; NaN when the two references coincide."""
    span = still - oracle
    if not (math.isfinite(model) and math.isfinite(span)) or span <= 0:
        return math.nan
    return float((still - model) / span)


class EvaluateConfig(StrictConfig):
    """What to score and how: splits, clip caps, sampler settings, metric options, Ray, MLflow."""

    splits: tuple[str, ...] = ("val", "test", "test_xling", "test_voice")
    per_language: tuple[str, ...] = ("test",)  # these splits are also reported per language
    per_voice: tuple[str, ...] = ("test", "test_voice")  # ... and per voice (corpus manifest's)
    max_clips_per_split: int = Field(8, gt=0)
    sampler: Literal["ddim", "ddpm"] = "ddim"
    steps: int = Field(10, gt=0)
    spacing: Literal["uniform", "quadratic"] = "quadratic"  # DDIM timesteps (diffusion.DEFAULT_SPACING)
    guidance: float | None = None  # None: the bundle's tuned value
    eta: float | None = None  # DDIM η; None: the bundle's default
    seed: int = 0  # each clip samples with clip_seed(seed, clip_id)
    # the model's blink rate is the mean over this many samples (seeds seed, seed+1, ...): one
    # sample's blink count swings by tens of percent between seeds
    blink_samples: int = Field(2, gt=0)
    # where the model's blink rate comes from: "corpus" = the bundle's own (the training corpus's
    # blinks at their rate); "speaker" = the model is told the rate measured on the same speaker's
    # other clips in the store (tracked landmarks, as `generate --blinks-like VIDEO` measures a
    # user's reference video of the person). Blink rate is a trait of the person that neither the
    # audio nor the photo shows; a clip whose speaker has no other clip keeps the corpus rate.
    blink_reference: Literal["corpus", "speaker"] = "corpus"
    # the image the model animates: "portrait" = the speaker's photo named by the corpus manifest,
    # "first_frame" = the clip's first frame, "auto" = the photo where there is one
    reference: Literal["auto", "portrait", "first_frame"] = "auto"
    fidelity: bool = True  # also generate with the source's pose and eyes for PSNR/SSIM
    baselines: bool = True  # also score oracle / still / shifted (the oracle costs a render per clip)
    shift_seconds: float = Field(0.5, gt=0)
    max_offset: int = Field(15, gt=0)  # sync sweep ±frames
    cpbd_stride: int = Field(5, gt=0)  # CPBD on every n-th frame
    image_stride: int = Field(5, gt=0)  # PSNR/SSIM on every n-th frame
    num_cpus_per_clip: float = Field(1.0, gt=0)
    num_gpus_per_clip: float = Field(0.0, ge=0)  # e.g. 0.25: four clips share a GPU
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")  # the generator's: CUDA when the task has a GPU
    evaluator: EvaluatorConfig = EvaluatorConfig()
    ray: RayConfig = RayConfig()
    mlflow: MlflowConfig = MlflowConfig()


# -- inputs -----------------------------------------------------------------------------------


def select_clips(index: list[dict], cfg: EvaluateConfig) -> dict[str, list[dict]]:
    """Index rows per reported split (``test/<lang>`` included), at most ``max_clips_per_split``.

    The cap is shared round-robin across languages (clips by id within each), so a capped split
    still covers every language it holds. Splits without clips in the store are not reported.
    """
    groups: dict[str, list[dict]] = {}
    for split in cfg.splits:
        by_lang: dict[str, list[dict]] = {}
        for r in sorted((r for r in index if r["split"] == split), key=lambda r: r["clip_id"]):
            by_lang.setdefault(r["language"], []).append(r)
        queues = [by_lang[lang] for lang in sorted(by_lang)]
        chosen: list[dict] = []
        while len(chosen) < cfg.max_clips_per_split and any(queues):
            for queue in queues:
                if queue and len(chosen) < cfg.max_clips_per_split:
                    chosen.append(queue.pop(0))
        if chosen:  # a split the store does not hold (test_voice of your own videos) is left out
            groups[split] = sorted(chosen, key=lambda r: r["clip_id"])
    for split in cfg.per_language:
        for lang in sorted({r["language"] for r in groups.get(split, [])}):
            groups[f"{split}/{lang}"] = [r for r in groups[split] if r["language"] == lang]
    return groups


def voice_groups(groups: dict[str, list[dict]], info: dict[str, dict[str, Any]],
                 splits: tuple[str, ...]) -> dict[str, list[dict]]:
    """``<split>/<engine>/<voice>`` groups of ``splits``' clips by the voice the corpus manifest
    names for them (clips it names none for are left out)."""
    out: dict[str, list[dict]] = {}
    for split in splits:
        for row in groups.get(split, []):
            voice = info.get(row["clip_id"], {}).get("voice")
            if voice:
                out.setdefault(f"{split}/{voice}", []).append(row)
    return out


def corpus_info(corpus: str | None) -> dict[str, dict[str, Any]]:
    """Per clip id, what the corpus manifest adds to the clip store: ``blinks`` (how many the
    ``truth`` file's ``blinks`` [K,2] hold), ``seconds`` and ``blink_rate`` (their quotient), and
    ``portrait`` (absolute path of the speaker's photo) and ``voice`` (``engine/name``), each where
    the manifest has it."""
    info: dict[str, dict[str, Any]] = {}
    manifest = Path(corpus or "", "manifest.jsonl")
    if not corpus or not manifest.is_file():
        return info
    for line in manifest.read_text(encoding="utf-8").splitlines():
        row = json.loads(line) if line.strip() else {}
        if not row.get("clip_id"):
            continue
        entry = info.setdefault(row["clip_id"], {})
        truth = Path(corpus, row.get("truth") or "")
        if row.get("truth") and truth.is_file() and row.get("duration_s"):
            with np.load(truth) as npz:
                if "blinks" in npz.files:
                    entry["blinks"] = len(npz["blinks"])
                    entry["seconds"] = float(row["duration_s"])
                    entry["blink_rate"] = entry["blinks"] / entry["seconds"]
        if row.get("portrait") and Path(corpus, row["portrait"]).is_file():
            entry["portrait"] = str(Path(corpus, row["portrait"]).resolve())
        if row.get("voice"):
            entry["voice"] = str(row["voice"])
    return info


def speaker_blink_rates(index: list[dict], data: str, clip_ids: list[str]) -> dict[str, dict[str, float]]:
    """Per clip id in ``clip_ids``: ``reference_blink_rate``, its speaker's blink rate over their
    *other* clips in the store (tracked landmarks, pooled: all blinks over all seconds; see
    ``blink_reference``), and ``reference_seconds``. Clips without a speaker, or whose speaker has
    no other clip, are left out. Reads only the evaluated speakers' records."""
    from disenttalk.metrics.landmarks import landmark_blink_count

    by_id = {r["clip_id"]: r for r in index}
    speakers = {by_id[c]["speaker"] for c in clip_ids if c in by_id and by_id[c].get("speaker")}
    counts: dict[str, tuple[str, int, float]] = {}  # clip id → (speaker, blinks, seconds)
    for row in index:
        if row.get("speaker") in speakers:
            rec = clipstore.read_record(data, row)
            fps = float(rec.fps)
            counts[row["clip_id"]] = (row["speaker"], landmark_blink_count(rec.landmarks, fps),
                                      len(rec.landmarks) / fps)
    out: dict[str, dict[str, float]] = {}
    for clip_id in clip_ids:
        speaker = by_id.get(clip_id, {}).get("speaker")
        others = [(n, sec) for other, (spk, n, sec) in counts.items() if spk == speaker and other != clip_id]
        seconds = sum(sec for _, sec in others)
        if speaker and seconds > 0:
            out[clip_id] = {"reference_blink_rate": sum(n for n, _ in others) / seconds,
                            "reference_seconds": seconds}
    return out


def reference_image(cfg: EvaluateConfig, clip_id: str, info: dict[str, Any], first_frame: np.ndarray,
                    first_landmarks: np.ndarray | None) -> tuple[str, np.ndarray, np.ndarray | None]:
    """(kind, image, landmarks or None) the model animates for one clip; see ``reference``."""
    from disenttalk import media

    if cfg.reference != "first_frame" and info.get("portrait"):
        return "portrait", media.read_image(info["portrait"]), None  # landmarks: tracked in render
    if cfg.reference == "portrait":
        raise ValueError(f"{clip_id}: reference=portrait, but the corpus manifest names no portrait "
                         "for it (pass --corpus, or use reference=auto|first_frame)")
    return "first_frame", first_frame, first_landmarks


def tracked_reference(cfg: EvaluateConfig, clip_id: str, info: dict[str, Any], first_frame: np.ndarray | None,
                      first_landmarks: np.ndarray | None) -> tuple[str, np.ndarray, np.ndarray]:
    """:func:`reference_image` with its landmarks (a photo is tracked here); errors name the clip."""
    from disenttalk.face.tracker import FaceTracker

    kind, image, landmarks = reference_image(cfg, clip_id, info, first_frame, first_landmarks)
    if image is None:
        raise ValueError(f"{clip_id}: no reference image ({kind})")
    if landmarks is None:
        with FaceTracker(static=True) as tracker:
            landmarks = tracker.track_image(image)
        if landmarks is None:
            raise ValueError(f"{clip_id}: no face found in the reference image ({kind})")
    return kind, image, landmarks


# -- one clip (a Ray task) ------------------------------------------------------------------------


def fill_gaps(x: np.ndarray) -> np.ndarray:
    """Rows with NaN (no face) replaced by the nearest earlier valid row (or the first valid one)."""
    x = np.array(x, dtype=np.float32)
    ok = np.isfinite(x.reshape(len(x), -1)).all(-1)
    if not ok.any():
        return np.zeros_like(x)
    idx = np.maximum.accumulate(np.where(ok, np.arange(len(x)), -1))
    idx[idx < 0] = np.flatnonzero(ok)[0]
    return x[idx]


def landmark_lips(landmarks: np.ndarray, morphable: Any, lip_dims: Any, norm: dict) -> np.ndarray | None:
    """Normalised lip expression parameters [T,K_lip] of landmarks [T,478,3] (gaps filled); None without a face."""
    if not np.isfinite(landmarks).all(axis=(1, 2)).any():
        return None  # the face was lost in every frame: no lip sync to measure
    expression, _, _ = morphable.encode(fill_gaps(landmarks))
    lip = list(lip_dims)
    return ((expression[:, lip] - norm["mean"][lip]) / norm["std"][lip]).astype(np.float32)


def evaluate_clip(row: dict, data: str, bundle_files: dict[str, bytes], expert_files: dict[str, bytes],
                  cfg_json: str, info: dict[str, Any]) -> dict:
    """Generate, render, re-track and score one clip; returns per-system metrics and plot curves.

    The bundle and the evaluator come as packed folders (``storage.pack_dir``), so the task runs
    on any node; each machine writes them to its temp dir once."""
    from disenttalk import media
    from disenttalk.face.tracker import FaceTracker
    from disenttalk.generate.generator import Generator
    from disenttalk.generate.motion import MAX_BLINK_RATE, Controls, Motion
    from disenttalk.metrics import baselines, clip
    from disenttalk.metrics.landmarks import (
        blink_rate_error,
        landmark_blink_count,
        landmark_blink_rate,
        lmd,
    )
    from disenttalk.metrics.sync import load_evaluator

    cfg = EvaluateConfig.from_json(cfg_json)
    rec = clipstore.read_record(data, row)
    gen = Generator.from_bundle(storage.unpack_dir(bundle_files), device=cfg.device)
    bundle = gen.bundle
    evaluator = load_evaluator(storage.unpack_dir(expert_files))
    with storage.local_copy(rec.source_uri) as path:
        # at the record's frame rate, as preprocessing resampled it
        truth_frames = media.read_video(path, with_audio=False, fps=float(rec.fps)).frames
    t = min(len(truth_frames), rec.num_frames)
    truth_frames, truth_lm = truth_frames[:t], rec.landmarks[:t]
    fps = float(rec.fps)
    audio = rec.audio[: int(round(t / fps * rec.sample_rate))]
    feats = evaluator.frontend(audio, rec.sample_rate, num_frames=t)
    reference, portrait, portrait_lm = tracked_reference(
        cfg, rec.clip_id, info, truth_frames[0], truth_lm[0] if rec.valid[0] else None)
    seed = clip_seed(cfg.seed, rec.clip_id)
    kw = dict(steps=cfg.steps, sampler=cfg.sampler, guidance=cfg.guidance, eta=cfg.eta, seed=seed,
              spacing=cfg.spacing)

    def track(motion: Motion) -> tuple[np.ndarray, np.ndarray]:
        frames = gen.render(motion, portrait, portrait_lm)[:t]
        return frames, FaceTracker().track(frames).landmarks

    def render(controls: Controls, **over: Any) -> tuple[np.ndarray, np.ndarray, Motion]:
        motion = gen.motion(audio, rec.sample_rate, controls=controls, **{**kw, **over})
        return (*track(motion), motion)

    # the model's controls: its own blinks, at the speaker's rate when blink_reference says so
    told_rate = info.get("reference_blink_rate") if cfg.blink_reference == "speaker" else None
    blink_rate = None if told_rate is None else min(float(told_rate), MAX_BLINK_RATE)
    frames, lm, motion = render(Controls(blink_rate=blink_rate))
    extra_rates = []
    for k in range(1, cfg.blink_samples):
        _, other, _ = render(Controls(blink_rate=blink_rate), seed=seed + k)
        extra_rates.append(landmark_blink_rate(other, fps))
    expression, pose, identity = bundle.morphable.encode(fill_gaps(truth_lm))
    fidelity = None
    if cfg.fidelity:
        f_frames, f_lm, _ = render(Controls(eyes=expression, pose=pose))
        fidelity = clip.Trace(landmarks=f_lm, frames=f_frames)

    def decoded_lmd(expr: np.ndarray) -> float:
        """LMD of an expression sequence decoded with the clip's own identity and pose (no render)."""
        n = min(len(expr), t)
        return lmd(bundle.morphable.decode(expr[:n], pose[:n], identity), truth_lm[:n])

    def lips(x: np.ndarray) -> np.ndarray:  # the evaluator's own lip dims: one yardstick for every bundle
        return landmark_lips(x, bundle.morphable, evaluator.lip or bundle.split.lip, evaluator.norm)

    truth = clip.Trace(landmarks=truth_lm, lip=lips(truth_lm), frames=truth_frames)
    systems = {SYSTEM: clip.Trace(landmarks=lm, lip=lips(lm), frames=frames), "truth": truth}
    if cfg.baselines:
        # the oracle: the truth's own expression through encode → render → re-track, like the model's
        o_frames, o_lm = track(Motion(expression.astype(np.float32), np.zeros((t, 6), np.float32), fps))
        systems["oracle"] = clip.Trace(landmarks=o_lm, lip=lips(o_lm), frames=o_frames)
        shift = baselines.shift_frames(fps, cfg.shift_seconds)
        systems["still"] = clip.Trace(*(baselines.still(x) for x in (truth.landmarks, truth.lip,
                                                                     truth.frames)))
        systems["shifted"] = clip.Trace(*(baselines.delayed(x, shift) for x in (truth.landmarks, truth.lip,
                                                                                 truth.frames)))
    score_kw = dict(fps=fps, audio_features=feats, expert=evaluator.expert,
                    pauses=clip.pause_frames(audio, rec.sample_rate, t, fps),
                    truth_blink_rate=info.get("blink_rate"),
                    cpbd_stride=cfg.cpbd_stride, image_stride=cfg.image_stride,
                    max_offset=cfg.max_offset, window=evaluator.window)
    scores = {name: clip.score_clip(trace, truth, fidelity=fidelity if name == SYSTEM else None,
                                    **score_kw)
              for name, trace in systems.items()}
    scores[SYSTEM]["lmd_decoded"] = decoded_lmd(motion.expression)
    if cfg.baselines:
        scores["oracle"]["lmd_decoded"] = decoded_lmd(expression)
        scores["still"]["lmd_decoded"] = decoded_lmd(baselines.still(expression))
    model = scores[SYSTEM]
    if extra_rates and math.isfinite(model["blink_rate"]):
        model["blink_rate"] = float(np.mean([model["blink_rate"], *extra_rates]))
        truth_rate = info.get("blink_rate", scores["truth"]["blink_rate"])
        model["blink_rate_error"] = blink_rate_error(model["blink_rate"], truth_rate)
    if blink_rate is not None:
        model["told_blink_rate"] = blink_rate  # per clip in clips.json; not averaged
    # the truth's blinks as counted (the corpus's own where it has them, else tracked): a split's
    # rate interval pools them
    truth_blinks = (info["blinks"], info["seconds"]) if "blinks" in info else (
        landmark_blink_count(truth_lm, fps), t / fps)
    return {"clip_id": rec.clip_id, "language": rec.language, "split": rec.split,
            "reference": reference, "scores": scores, "truth_blinks": truth_blinks,
            "curves": {name: {k: v.tolist() for k, v in clip.curves(trace).items()}
                       for name, trace in systems.items()}}


def score_clips(rows: list[dict], data: str, bundle_dir: str | Path, expert_dir: str | Path,
                cfg: EvaluateConfig, info: dict[str, dict[str, Any]], desc: str = "evaluate clips") -> list[dict]:
    """:func:`evaluate_clip` for every row as Ray tasks (``num_cpus_per_clip`` each), in completion order."""
    import ray

    # "DEFAULT": scheduled on the cluster even when called from a Tune trial, whose placement
    # group would otherwise capture the tasks (a sweep scores its trials this way)
    task = ray.remote(num_cpus=cfg.num_cpus_per_clip, num_gpus=cfg.num_gpus_per_clip,
                      scheduling_strategy="DEFAULT")(evaluate_clip)
    # the bundle and the evaluator (driver-local folders) reach every node through the object
    # store, once each; the clip store is a URI every node reads
    bundle_ref, expert_ref = ray.put(storage.pack_dir(bundle_dir)), ray.put(storage.pack_dir(expert_dir))
    refs = [task.remote(row, data, bundle_ref, expert_ref, cfg.to_json(), info.get(row["clip_id"], {}))
            for row in rows]
    results = []
    with tqdm(total=len(refs), desc=desc) as bar:
        pending = refs
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            results.extend(ray.get(done))
            bar.update(len(done))
    return results


# -- the evaluator sync expert ----------------------------------------------------------------------


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


EVALUATOR_BASIS = ("morphable.npz", "regions.json", "norm.npz")  # what the evaluator is built on


def evaluator_dir(data: str, out: str, basis: Path, cfg: EvaluateConfig, workdir: Path) -> Path:
    """A local folder with the evaluator expert: reused from ``<out>/evaluator`` when its key matches.

    ``basis`` is a folder with :data:`EVALUATOR_BASIS` (a bundle folder, or a sweep's shared basis):
    the morphable model, the region split whose lip dims the evaluator reads, and the
    normalisation. The evaluator keeps those lip dims, so bundles with other splits (a sweep's
    K_lip, the one-region ablation) are scored by the same yardstick."""
    from disenttalk.audio import make_frontend
    from disenttalk.face.morphable import MorphableModel
    from disenttalk.face.regions import RegionSplit
    from disenttalk.metrics.sync import save_evaluator, train_evaluator

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
    morphable = MorphableModel.load(basis / "morphable.npz")
    lip_dims = RegionSplit.load(basis / "regions.json").lip
    with np.load(basis / "norm.npz") as npz:
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
    storage.upload_dir(local, cached)
    return local


# -- tables and plots ---------------------------------------------------------------------------------


def aggregate(results: list[dict], groups: dict[str, list[dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """{system: {split: {metric: mean over the split's clips, n_clips}}} (NaN-aware means); the
    model's rows add ``gap_closed`` and the truth's blinks pooled over the split (``truth_blinks``
    in ``truth_seconds``) with the 95 % interval of the rate they measure
    (``truth_blink_rate_low``/``_high``): how closely that split can judge a blink rate at all."""
    from disenttalk.metrics.clip import METRICS
    from disenttalk.metrics.landmarks import poisson_rate_interval

    by_id = {r["clip_id"]: r for r in results}
    table: dict[str, dict[str, dict[str, float]]] = {}
    scored_systems = set().union(*(r["scores"] for r in results)) if results else {SYSTEM}
    for system in (s for s in (SYSTEM, *REFERENCES) if s in scored_systems):  # without baselines: model, truth
        table[system] = {}
        for split, rows in groups.items():
            scored = [by_id[r["clip_id"]]["scores"][system] for r in rows if r["clip_id"] in by_id]
            entry = {"n_clips": float(len(scored))}
            for m in METRICS:
                values = np.array([s[m] for s in scored], dtype=float)
                entry[m] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
            table[system][split] = entry
    for split, entry in table[SYSTEM].items():
        counted = [by_id[r["clip_id"]]["truth_blinks"] for r in groups[split]
                   if "truth_blinks" in by_id.get(r["clip_id"], {})]
        blinks, seconds = sum(n for n, _ in counted), sum(s for _, s in counted)
        entry["truth_blinks"], entry["truth_seconds"] = float(blinks), float(seconds)
        entry["truth_blink_rate_low"], entry["truth_blink_rate_high"] = (
            poisson_rate_interval(blinks, seconds) if seconds > 0 else (math.nan, math.nan))
        nothing = {"lmd": math.nan, "lmd_decoded": math.nan}
        still, oracle = table.get("still", {}).get(split, nothing), table.get("oracle", {}).get(split, nothing)
        entry["gap_closed"] = gap_closed(entry["lmd"], still["lmd"], oracle["lmd"])
        entry["gap_closed_decoded"] = gap_closed(entry["lmd_decoded"], still["lmd_decoded"],
                                                 oracle["lmd_decoded"])
    return table


def markdown(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """One markdown table: rows (split, system), columns the metrics."""
    from disenttalk.metrics.clip import METRICS

    columns = (*METRICS, "gap_closed", "gap_closed_decoded")
    lines = ["| split | system | n | " + " | ".join(columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for split in table[SYSTEM]:
        for system, splits in table.items():
            row = splits[split]
            cells = " | ".join("–" if math.isnan(row.get(m, math.nan)) else f"{row[m]:.4g}"
                               for m in columns)
            lines.append(f"| {split} | {system} | {int(row['n_clips'])} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_split(result: dict, split: str, folder: Path) -> list[Path]:
    """EAR over time, mouth opening and frame-to-frame change of one clip: model vs truth (and baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = result["curves"]
    specs = {"ear": ("eye aspect ratio", (SYSTEM, "truth")),
             "mouth": ("mouth opening (× inter-ocular)", (SYSTEM, "truth", "oracle")),
             "change": ("landmark change per frame (× inter-ocular)", (SYSTEM, "truth", "still"))}
    files = []
    for key, (label, systems) in specs.items():
        fig, ax = plt.subplots(figsize=(8, 3))
        for system in (s for s in systems if s in curves):
            y = np.asarray(curves[system][key], dtype=float)
            ax.plot(np.arange(len(y)) / 25.0, y, label=system, lw=1.2)
        ax.set(xlabel="time (s)", ylabel=label, title=f"{split}: {result['clip_id']}")
        ax.legend(loc="upper right")
        fig.tight_layout()
        file = folder / f"{split.replace('/', '_')}_{key}.png"
        fig.savefig(file, dpi=100)
        plt.close(fig)
        files.append(file)
    return files


# -- the stage ------------------------------------------------------------------------------------------


def run(cfg: EvaluateConfig, bundle: str, data: str, out: str, corpus: str | None = None) -> dict:
    """Evaluate ``bundle`` on the clip store ``data``; writes tables and plots to ``out``; returns the tables."""

    from workflows.common import format_summary
    from workflows.platform.raycluster import init_ray, shutdown_if_started
    from workflows.platform.tracking import start_run

    started = init_ray(cfg.ray)
    tic = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp, start_run(
            cfg.mlflow, params=cfg, tags={"stage": "evaluate", "bundle": bundle, "data": data}
        ) as tracker:
            work = Path(tmp)
            bundle_dir = resolve_bundle(bundle, work)
            index = clipstore.read_index(data)
            groups = select_clips(index, cfg)
            expert_dir = evaluator_dir(data, out, bundle_dir, cfg, work)
            info = corpus_info(corpus)
            groups.update(voice_groups(groups, info, cfg.per_voice))
            rows = {r["clip_id"]: r for split in cfg.splits for r in groups.get(split, [])}
            if cfg.blink_reference == "speaker":
                for clip_id, told in speaker_blink_rates(index, data, list(rows)).items():
                    info.setdefault(clip_id, {}).update(told)
            results = score_clips(list(rows.values()), data, bundle_dir, expert_dir, cfg, info)
            table = aggregate(results, groups)
            metrics = table[SYSTEM]
            base = {name: table[name] for name in REFERENCES if name in table}
            plots = work / "plots"
            plots.mkdir()
            by_id = {r["clip_id"]: r for r in results}
            for split, split_rows in groups.items():
                if split_rows and split_rows[0]["clip_id"] in by_id:
                    plot_split(by_id[split_rows[0]["clip_id"]], split, plots)
            files = {
                "metrics.json": json.dumps(metrics, indent=2, sort_keys=True),
                "baselines.json": json.dumps(base, indent=2, sort_keys=True),
                "clips.json": json.dumps([{k: r[k] for k in ("clip_id", "split", "language", "reference",
                                                             "scores")}
                                          for r in results], indent=2, sort_keys=True),
                "metrics.md": markdown(table),
            }
            for name, text in files.items():
                storage.write_text(storage.join(out, name), text)
                tracker.log_bytes(name, text.encode(), artifact_path="evaluation")
            storage.upload_dir(plots, storage.join(out, "plots"))
            tracker.log_artifact(plots, artifact_path="evaluation/plots")
            tracker.log_metrics({f"{split}/{m}": v for split, row in metrics.items()
                                 for m, v in row.items() if math.isfinite(v)})
            tracker.log_metrics({f"baseline/{name}/{split}/{m}": v for name, splits in base.items()
                                 for split, row in splits.items() for m, v in row.items()
                                 if math.isfinite(v)})
            summary = {split: {**{m: row[m] for m in ("n_clips", "lmd", "gap_closed", "lmd_decoded",
                                                      "blink_rate", "blink_duration", "sync_conf",
                                                      "mouth_p95", "mouth_pause")},
                               "truth_blink_rate_95": [round(row["truth_blink_rate_low"], 3),
                                                       round(row["truth_blink_rate_high"], 3)]}
                       for split, row in metrics.items()}
            summary["blink_reference"] = cfg.blink_reference
            summary["seconds"] = round(time.perf_counter() - tic, 1)
            summary["mlflow_run"] = tracker.run_id or "disabled"
            typer.echo(format_summary(f"evaluate → {out}", summary))
            return {"metrics": metrics, "baselines": base, "run_id": tracker.run_id}
    finally:
        shutdown_if_started(started)


@user_errors("evaluate")
def evaluate(
    bundle: str = typer.Option(..., "--bundle", help="bundle folder, s3:// URI or models:/name@alias"),
    data: str = typer.Option(..., "--data", help="preprocessed clip store (folder or s3:// URI)"),
    out: str = typer.Option(..., "--out", help="where tables, plots and the evaluator go"),
    corpus: str | None = typer.Option(None, "--corpus", help="demo corpus folder with truth .npz files"),
    config: Path | None = typer.Option(None, "--config", help="YAML (default configs/evaluate.yaml)"),
    overrides: list[str] = typer.Option([], "--set", help="section.key=value, repeatable"),
) -> None:
    """Score a model bundle on val/test/test_xling clips with baselines; log everything to MLflow."""
    from workflows.common import load_config

    run(load_config(EvaluateConfig, "evaluate", config, overrides), bundle, data, out, corpus)


if __name__ == "__main__":  # Ray job entrypoint: python -m workflows.evaluate ...
    typer.run(evaluate)
