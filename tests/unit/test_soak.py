"""``disenttalk bench soak``'s accounting (per-minute reports, the exit rule, the summary) and its
hostile helpers (raw uploads read the early answer; the media are what they claim), no server."""

from __future__ import annotations

import io
import socket
import threading

import pytest

from serve.soak import NO_ANSWER, Tally

DOCUMENTED = frozenset({1000, 1001, 1013, 4400, 4404, 4408, 4413})


def tally() -> Tally:
    return Tally(t0=1000.0, documented=DOCUMENTED)


def test_outcomes_land_in_their_minute_with_counts_and_percentiles():
    t = tally()
    for k, latency in enumerate([1.0, 2.0, 3.0, 4.0]):
        t.request("generate_audio", 200, latency, t=1000 + 10 * k)
    t.request("generate_text", 503, 0.1, t=1030)
    t.request("hostile:chunked_200mb", 413, 0.2, t=1040)
    t.stream("stream", 1000, frames=75, t=1050)
    t.stream("stream", 1013, frames=3, t=1055)
    t.rss("Animator#a", 500 * 2**20, t=1059)
    t.request("generate_audio", 200, 9.0, t=1061)  # minute 2
    t.event("chaos: killed Animator#a", t=1070)
    first, second = t.report(0), t.report(1)
    assert first["minute"] == 1 and first["requests"] == {"200": 4, "503": 1, "413": 1}
    assert first["by_kind"]["generate_audio"] == {"200": 4, "p50_s": 2.5, "p95_s": 3.85}
    assert first["p50_s"] == 2.5  # hostile latencies are not the load's
    assert first["streams_completed"] == 1 and first["streams_failed"] == 1
    assert first["streams"]["stream"] == {"1000": 1, "1013": 1} and first["frames"]["stream"] == 78
    assert first["rss_mb"] == {"Animator#a": 500.0} and first["events"] == []
    assert second["requests"] == {"200": 1} and second["events"] == ["chaos: killed Animator#a"]


def test_the_exit_rule_fails_5xx_but_503_unanswered_load_and_undocumented_closes():
    t = tally()
    t.request("generate_audio", 503, 1.0, t=1001)
    t.request("hostile:chunked_200mb", NO_ANSWER, 1.0, t=1002)  # a hostile upload may be cut off
    t.stream("stream", 4408, t=1003)
    t.stream("hostile:burst_8s", 4413, t=1004)
    t.stream("stream", 1001, t=1005)
    assert t.failures() == [] and t.summary()["ok"]
    t.request("generate_text", 500, 1.0, t=1006)
    t.request("hostile:pixel_bomb", 502, 1.0, t=1007)
    t.request("portrait_upload", NO_ANSWER, None, t=1008)
    t.stream("stream", 1011, t=1009)
    t.stream("stream", None, t=1010)  # an abnormal close (no close frame)
    t.stream("hostile:bad_start_binary", 4999, t=1011)
    assert t.failures() == [
        "generate_text answered 500 ×1", "hostile:bad_start_binary ended with close code 4999 (not documented) ×1",
        "hostile:pixel_bomb answered 502 ×1", "portrait_upload got no answer ×1",
        "stream ended with close code 1011 (not documented) ×1",
        "stream ended with close code None (not documented) ×1"]
    assert not t.summary()["ok"]


def test_late_outcomes_count_in_the_last_minute_and_the_summary_compares_ends():
    t = tally()
    t.last = 2
    for minute in range(3):
        for _ in range(10 - minute):
            t.request("generate_audio", 200, 1.0, t=1000 + 60 * minute + 1)
        t.rss("Animator#a", (100 + minute) * 2**20, t=1000 + 60 * minute + 2)
    t.request("generate_audio", 200, 1.0, t=1000 + 60 * 7)  # after the end: minute 3
    t.expect("hostile:chunked_200mb", frozenset({413}))
    t.request("hostile:chunked_200mb", 413, 0.1, t=1001)
    t.request("hostile:chunked_200mb", 200, 0.1, t=1002)
    summary = t.summary()
    assert summary["minutes"] == 3 and summary["generate_ok_per_minute"] == [10, 9, 9]
    assert summary["throughput_first_vs_last"] == [10.0, 9.0]
    assert summary["rss_growth_pct"] == {"Animator#a": 2.0}  # under 6 minutes: from the first
    assert summary["contract_misses"] == {"hostile:chunked_200mb": {"200": 1}}


def test_rss_is_the_minutes_median_with_and_without_shared_object_store_pages():
    t = tally()
    t.last = 6
    for minute in range(7):
        shared = 100 + 20 * minute  # object-store pages mapped grow; the replica's own memory does not
        for k, private in enumerate([300, 800, 320]):  # an upload in flight at the second sample
            t.rss("Ingress#a", (private + shared) * 2**20, t=1000 + 60 * minute + 10 * k, shared=shared * 2**20)
    minute_5 = t.report(4)
    assert minute_5["rss_mb"] == {"Ingress#a": 500.0} and minute_5["private_rss_mb"] == {"Ingress#a": 320.0}
    summary = t.summary()  # minute 5 → minute 7: 500 → 540 MB; private 320 → 320 MB
    assert summary["rss_growth_pct"] == {"Ingress#a": 8.0}
    assert summary["private_rss_growth_pct"] == {"Ingress#a": 0.0}


@pytest.fixture
def early_413():
    """A server that answers 413 as soon as it has the headers, reading no body."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(4096)
                conn.sendall(b"HTTP/1.1 413 Content Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{port}"
    listener.close()


def test_raw_uploads_read_the_early_answer_of_declared_and_chunked_bodies(early_413):
    from serve.soak_cases import raw_upload, zeros

    for declared in (64 * 2**20, None):  # Content-Length, then chunked
        status = raw_upload(early_413, "/v1/generate", {}, {"portrait_id": "x"}, "audio",
                            zeros(64 * 2**20), declared, timeout=30)
        assert status == 413


def test_hostile_media_are_what_they_claim():
    import av

    from serve.soak_cases import pixel_bomb, silent_flac, sun_au

    flac = silent_flac(3600)
    assert len(flac) < 64_000
    with av.open(io.BytesIO(flac)) as f:
        stream = f.streams.audio[0]
        assert f.format.name == "flac" and float(stream.duration * stream.time_base) == 3600.0
        assert sum(frame.samples for _, frame in zip(range(3), f.decode(audio=0), strict=False)) == 3 * 64000
    with av.open(io.BytesIO(sun_au())) as f:
        assert f.format.name == "au"
    png = pixel_bomb()  # its size from the IHDR chunk (PIL would refuse to open a bomb)
    assert png[12:16] == b"IHDR" and (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (7000, 6000)
