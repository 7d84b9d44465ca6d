"""Fixtures for workflow tests: one local Ray cluster (2 CPUs), a moto S3 server, sqlite MLflow.

Order matters: the S3 endpoint and dummy credentials are put in the environment before
``ray.init`` so every Ray worker inherits them (and the Ray helper forwards them too).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

FPS = 25
SIZE = 256
SR = 16_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (free port), with AWS_* env set; stopped at the end."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env["AWS_ENDPOINT_URL"]
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """A sqlite MLflow store in a temp folder, exported as MLFLOW_TRACKING_URI."""
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{db}"
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield uri
    if saved is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint, mlflow_uri):
    """A local Ray cluster with 2 CPUs for the whole session (started after S3/MLflow env)."""
    import ray

    from workflows.platform.raycluster import RayConfig, init_ray

    # with the dashboard: its State API is how Ray Train frees a stopped run's workers (sweeps)
    init_ray(RayConfig(num_cpus=2, progress_bars=False, include_dashboard=True))
    yield ray
    ray.shutdown()


def tone(seconds: float, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    """A sine tone, float32 mono 16 kHz."""
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def portrait_frames(image: np.ndarray, seconds: float) -> np.ndarray:
    """The astronaut's face cropped to SIZE², with a small sway so tracking has motion [T,H,W,3]."""
    from skimage.transform import resize

    face = (resize(image[0:300, 100:400], (SIZE + 16, SIZE + 16)) * 255).astype(np.uint8)
    n = int(seconds * FPS)
    shifts = np.round(8 + 6 * np.sin(np.linspace(0, 2 * np.pi, n))).astype(int)
    return np.stack([face[s : s + SIZE, 8 : 8 + SIZE] for s in shifts])


def gradient_frames(seconds: float) -> np.ndarray:
    """A face-free horizontal gradient video [T,H,W,3]."""
    ramp = np.linspace(0, 255, SIZE, dtype=np.float32)
    frame = np.stack([np.tile(ramp, (SIZE, 1))] * 3, axis=-1).astype(np.uint8)
    return np.repeat(frame[None], int(seconds * FPS), axis=0)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, astronaut) -> Path:
    """A folder with manifest.jsonl: 2 good clips, a corrupt file, a face-free and a silent clip."""
    from disenttalk.media import write_video

    root = tmp_path_factory.mktemp("corpus")
    (root / "clips").mkdir()
    seconds = 1.2
    good = portrait_frames(astronaut, seconds)
    write_video(root / "clips/good_a.mp4", good, FPS, tone(seconds, 220.0))
    write_video(root / "clips/good_b.mp4", good[::-1].copy(), FPS, tone(seconds, 330.0))
    write_video(root / "clips/noface.mp4", gradient_frames(seconds), FPS, tone(seconds))
    write_video(root / "clips/silent.mp4", good, FPS, np.zeros(int(seconds * SR), np.float32))
    rng = np.random.default_rng(0)
    (root / "clips/corrupt.mp4").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    rows = [
        ("good_a", "good_a.mp4", "en", "spk1", "train"),
        ("good_b", "good_b.mp4", "zh", "spk2", "train"),
        ("noface", "noface.mp4", "en", "spk1", "train"),
        ("silent", "silent.mp4", "en", "spk1", "test"),
        ("corrupt", "corrupt.mp4", "es", "spk3", "train"),
    ]
    import json

    lines = [
        json.dumps({"clip_id": c, "path": f"clips/{p}", "language": lang, "speaker": spk,
                    "sentence": "hello", "duration_s": seconds, "split": split})
        for c, p, lang, spk, split in rows
    ]  # fmt: skip
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


# -- a tiny clip store and a random-weight bundle (evaluate, tune-sampler) -----------------

EVAL_CLIPS = (  # clip_id, split, language, tone frequency
    ("tr_a", "train", "en", 220.0),
    ("tr_b", "train", "zh", 330.0),
    ("va_a", "val", "en", 260.0),
    ("te_a", "test", "en", 300.0),
    ("xl_a", "test_xling", "es", 280.0),
)


@pytest.fixture(scope="session")
def eval_store(tmp_path_factory, astronaut):
    """A clip store written directly (video files + tracked records + index) with 5 short clips;
    read-only for the tests (made once per session: a face tracked over 40 frames, 5 videos)."""
    from disenttalk.face.tracker import FaceTracker
    from disenttalk.media import write_video
    from workflows.platform import clipstore

    root = tmp_path_factory.mktemp("eval_store")
    frames = portrait_frames(astronaut, 1.6)
    tracks = FaceTracker().track(frames)
    rows = []
    for i, (cid, split, lang, freq) in enumerate(EVAL_CLIPS):
        clip_frames = np.roll(frames, 3 * i, axis=0)  # different phase of the sway per clip
        landmarks = np.roll(tracks.landmarks, 3 * i, axis=0)
        audio = tone(len(frames) / FPS, freq)
        video = root / "videos" / f"{cid}.mp4"
        video.parent.mkdir(exist_ok=True)
        write_video(video, clip_frames, FPS, audio)
        rec = clipstore.ClipRecord(
            # test and test_xling share their speaker, as in the demo corpus
            clip_id=cid, speaker="spk_test" if split.startswith("test") else f"spk_{cid}",
            language=lang, split=split, fps=float(FPS),
            landmarks=landmarks, valid=np.isfinite(landmarks).all(axis=(1, 2)), audio=audio,
            sample_rate=SR, features=np.zeros((len(frames), 0), np.float32),
            source_uri=str(video), content_hash=f"{i:064x}",
        )
        rows.append(rec.index_row(clipstore.write_record(str(root), rec)))
    clipstore.write_table(str(root / clipstore.INDEX), rows, clipstore.INDEX_SCHEMA)
    return root, tracks.landmarks


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, eval_store):
    """A bundle with random weights: tiny denoiser and sync expert, morphable model fit on the
    store. Read-only: a test that edits a bundle edits its own copy."""
    import torch

    from disenttalk.audio import make_frontend
    from disenttalk.bundle import write_bundle
    from disenttalk.face.morphable import MorphableModel
    from disenttalk.face.regions import RegionSplit
    from disenttalk.model.config import DenoiserConfig, ModelConfig, SyncConfig
    from disenttalk.model.denoiser import Denoiser
    from disenttalk.model.diffusion import DiffusionConfig
    from disenttalk.model.sync import SyncExpert

    _, landmarks = eval_store
    n, k_lip, k_eye = 8, 3, 2
    cfg = ModelConfig(
        denoiser=DenoiserConfig(dim=16, num_blocks=1, heads=2), diffusion=DiffusionConfig(num_timesteps=100),
        sync=SyncConfig(embed_dim=8, hidden=16), n_expression=n, k_lip=k_lip, k_eye=k_eye,
    )
    split = RegionSplit.contiguous(n, k_lip, k_eye)
    morphable = MorphableModel.fit([landmarks], n_expression=n)
    expression, _, _ = morphable.encode(landmarks)
    norm = {"mean": np.nanmean(expression, 0).astype(np.float32),
            # small std: random-weight samples stay near the mean face, so re-tracking finds it
            "std": (0.05 * np.nanstd(expression, 0) + 1e-4).astype(np.float32)}
    audio_dim = make_frontend(cfg.audio).feature_dim
    torch.manual_seed(0)
    denoiser = Denoiser(cfg.denoiser, split, audio_dim)
    expert = SyncExpert(cfg.sync, audio_dim, k_lip)
    path = tmp_path_factory.mktemp("bundle") / "bundle"
    write_bundle(path, config=cfg, morphable=morphable, split=split, norm=norm,
                 expert_state=expert.state_dict(), denoiser_state=denoiser.state_dict())
    return path
