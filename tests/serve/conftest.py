# ruff: noqa: F811  (fixtures imported from tests/ray/conftest.py are requested by name)
"""A running DisentTalk app on 127.0.0.1 (free port): tiny bundle registered in sqlite MLflow.

The Ray cluster, MLflow store and tiny random-weight bundle are the workflow tests' fixtures
(tests/ray/conftest.py). Serve is shut down by the module fixture; Ray by the session's.
"""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest

from tests.ray.conftest import (  # noqa: F401  (fixtures, used by name)
    SR,
    eval_store,
    mlflow_uri,
    ray_cluster,
    s3_endpoint,
    tiny_bundle,
    tone,
)

MODEL = "disenttalk-serve-test"
TINY = [  # small enough for 2 shared cores: 2 DDIM steps, a fraction of a CPU per replica
    "steps=2", "stream.steps=2", "ingress.ray_actor_options.num_cpus=0",
    "portraits.ray_actor_options.num_cpus=0.1", "generator.autoscaling=null",
    "generator.num_replicas=1", "generator.ray_actor_options.num_cpus=0.5",
    "generator.max_ongoing_requests=1", "generator.max_queued_requests=2",
    "limits.max_audio_s=8", "limits.max_upload_mb=2", "limits.max_stream_s=8",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav_bytes(audio: np.ndarray, rate: int = SR, channels: int = 1) -> bytes:
    """A 16-bit WAV file in memory."""
    from scipy.io import wavfile

    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1)
    buf = io.BytesIO()
    wavfile.write(buf, rate, pcm)
    return buf.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def registered(ray_cluster, mlflow_uri, tiny_bundle):
    """The tiny bundle registered twice as MODEL (versions for the reload test); champion = first.

    Each test module registers its own two versions in the session's store.
    """
    from mlflow import MlflowClient

    from workflows.register import CHAMPION, register

    # a per-voice group's name carries an espeak-ng variant's "+", which MLflow refuses in names
    first = register(str(tiny_bundle), {"test": {"lmd": 0.5}, "test/espeak/en-us+m3": {"lmd": 0.4}},
                     name=MODEL, experiment="serve-test")
    second = register(str(tiny_bundle), {"test": {"lmd": 0.9}}, name=MODEL, experiment="serve-test")
    MlflowClient().set_registered_model_alias(MODEL, CHAMPION, first["version"])
    return first["version"], second["version"]


@pytest.fixture(scope="module")
def portrait_store(tmp_path_factory) -> str:
    """The app's portrait store: a folder of this module's own (not the workspace's)."""
    return str(tmp_path_factory.mktemp("portraits"))


@pytest.fixture(scope="module")
def app_config(registered, portrait_store):
    from serve.app import load

    return load(None, [f"model_uri=models:/{MODEL}@champion", *TINY, f"portrait_store.uri={portrait_store}"])


@pytest.fixture(scope="module")
def server(app_config):
    """Base URL of the app, served by Ray Serve on a free loopback port."""
    from ray import serve

    from serve.app import start

    url = start(app_config, "127.0.0.1", free_port())
    yield url.rstrip("/")
    serve.shutdown()


@pytest.fixture(scope="session")
def portrait_png(astronaut) -> bytes:
    return png_bytes(astronaut)


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """1.5 s of a warbling tone (float32 16 kHz)."""
    t = np.arange(int(1.5 * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * (200 + 80 * np.sin(2 * np.pi * 3 * t)) * t)).astype(np.float32)
