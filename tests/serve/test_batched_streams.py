"""A generator replica's streams, batched: each stream's frames are byte for byte its frames alone."""

from __future__ import annotations

import threading

import numpy as np

from tests.serve.conftest import SR

# streams that differ in what a client picks: seed, guidance, intensities, rate, crop or photo
STARTS = [dict(seed=1), dict(seed=2, guidance=1.0), dict(seed=3, guidance=3.0, lip_scale=0.6),
          dict(seed=4, sample_rate=24000, crop_only=False)]


def _steps(engine, portrait, k: int, speech: np.ndarray, start: threading.Barrier | None = None
           ) -> list[bytes]:
    """Stream ``k`` as the replica runs it: opened, stepped every 0.32 s of audio, flushed
    (with ``start``: each step once every stream is ready for it)."""
    from serve.stream import open_stream, step_stream
    from serve.stream.protocol import StartMessage

    opts = STARTS[k]
    rate = opts.get("sample_rate", SR)
    audio = np.interp(np.arange(int(len(speech) * rate / SR)) / rate, np.arange(len(speech)) / SR,
                      speech).astype(np.float32)
    state = open_stream(engine, StartMessage(type="start", portrait_id=portrait.portrait_id, steps=2, **opts))
    packets, hop = [], int(0.32 * rate)
    steps = int(np.ceil(len(speech) / (0.32 * SR))) + 1  # the same count at every rate
    for n in range(steps):
        if start is not None:
            start.wait()  # the streams step together, as concurrent real-time streams do
        i = n * hop
        for out in step_stream(engine, state, audio[i:i + hop], n == steps - 1, portrait):
            packets += [p for _, p in out.get("frames", [])]
            state = out.get("state", state)
    return packets


def test_streams_batched_on_one_replica_send_the_frames_they_send_alone(tiny_bundle, astronaut, speech):
    from serve.config import ServeConfig
    from serve.engine import Engine
    from serve.portraits import prepare

    portrait = prepare("3" * 64, astronaut)
    alone = Engine(ServeConfig.from_dict({"batching": {"enabled": False}}))
    alone.load(str(tiny_bundle))
    expected = [_steps(alone, portrait, k, speech) for k in range(len(STARTS))]

    batched = Engine(ServeConfig.from_dict({"batching": {"enabled": True, "wait_ms": 30}}))
    batched.load(str(tiny_bundle))
    got: dict[int, list[bytes]] = {}
    start = threading.Barrier(len(STARTS))

    def run(k: int) -> None:
        got[k] = _steps(batched, portrait, k, speech, start)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(STARTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    shared = batched.info()["batching"]  # what /v1/model reports of the replica
    assert shared["enabled"] and shared["windows"] >= 2 * shared["batches"] > 0  # windows shared batches
    assert alone.info()["batching"] == {"enabled": False, "batches": 0, "windows": 0}
    for k in range(len(STARTS)):
        assert len(got[k]) == len(expected[k]) > 0
        assert got[k] == expected[k]  # header and JPEG bytes of every frame
    assert expected[0] != expected[1]
