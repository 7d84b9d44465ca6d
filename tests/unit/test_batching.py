"""Windows of concurrent streams sampled in shared batches give each stream exactly its own motion."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from disenttalk.generate import Controls, Generator, Motion
from disenttalk.generate.batching import WindowBatcher, sample_windows
from disenttalk.model.denoiser import Denoiser
from tests.unit.test_generate import SPLIT, SR, speech_like

# (seed, guidance, lip scale, sample rate): streams that differ in every setting a client picks
STREAMS = [(1, 2.0, 1.0, 16000), (2, 1.0, 1.0, 16000), (3, 3.5, 0.5, 16000), (4, 2.0, 1.3, 24000),
           (5, 1.5, 1.0, 16000), (6, 2.0, 1.0, 48000)]


@pytest.fixture(scope="module")
def gen(request) -> Generator:
    """The trained network's architecture (random weights), the mel frontend, a stream window."""
    from tests.unit.test_generate import bundle as bundle_fixture

    bundle = bundle_fixture.__wrapped__()
    cfg = bundle.config.model_copy(update={"denoiser": bundle.config.denoiser.model_copy(
        update={"look_ahead": 2, "dim": 32})})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = Denoiser(cfg.denoiser, SPLIT, 2 * cfg.audio.n_mels).state_dict()
    real = dataclasses.replace(bundle, config=cfg, denoiser_state=state, meta={"eta": 0.4})
    return Generator(real, window=16, prefix=8, first_hop=4)


def _resampled(audio: np.ndarray, rate: int) -> np.ndarray:
    t = np.arange(int(len(audio) * rate / SR)) / rate
    return np.interp(t, np.arange(len(audio)) / SR, audio).astype(np.float32)


def _stream(gen: Generator, k: int, chunks_of: float = 0.2, start: threading.Barrier | None = None
            ) -> np.ndarray:
    seed, guidance, lip, rate = STREAMS[k]
    audio = _resampled(speech_like(1.5, seed=k), rate)
    stream = gen.open_stream(rate, steps=4, seed=seed, guidance=guidance,
                             controls=Controls(lip_scale=lip))
    if start is not None:
        start.wait()
    step = int(chunks_of * rate)
    out = []
    for i in range(0, len(audio), step):
        out += stream.push(audio[i:i + step])
    out += stream.flush()
    return Motion.concat(out).expression


@pytest.mark.slow
def test_streams_sampled_together_get_exactly_what_they_get_alone(gen):
    alone = [_stream(gen, k) for k in range(len(STREAMS))]
    gen.batcher = batcher = WindowBatcher(max_batch=16, wait_ms=20.0)
    try:
        together: dict[int, np.ndarray] = {}
        start = threading.Barrier(len(STREAMS))

        def run(k: int) -> None:
            together[k] = _stream(gen, k, start=start)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(len(STREAMS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        gen.batcher = None
    assert batcher.windows >= 2 * batcher.batches  # windows really shared batches
    for k in range(len(STREAMS)):
        assert together[k].shape == alone[k].shape
        np.testing.assert_array_equal(together[k], alone[k])  # bit for bit
    assert not np.array_equal(alone[0], alone[4])  # and the streams differ from one another


def test_windows_that_cannot_share_a_batch_are_refused_and_a_failure_reaches_every_caller(gen):
    s = gen.open_stream(SR, steps=4)
    feats = gen.features(speech_like(1.0), SR, 25)
    short, long = (gen.window_job(0, feats[:n], None, 0, s.settings) for n in (12, 18))
    with pytest.raises(ValueError, match="same length"):
        sample_windows(gen, [short, long], 4.0)

    batcher = WindowBatcher(max_batch=4, wait_ms=50.0)
    bad = dataclasses.replace(short, feats=feats[:12, :1])  # a feature width the network refuses
    errors = []

    def run(job) -> None:
        try:
            batcher.run(gen, job, 4.0)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in (bad, short)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(errors) == 2  # the batch they shared failed: both callers hear it, none hang
    assert batcher.batches == 0
    assert batcher.run(gen, short, 4.0).shape == short.cond.shape  # and the next batch runs
