"""Local-cluster setup: the worker hook that silences the cleaner's State API warning only."""

from __future__ import annotations

import logging


def test_quiet_state_api_warnings_drops_only_that_warning(caplog):
    from workflows.platform.raycluster import _CLEANER_LOGGER, quiet_state_api_warnings

    logger = logging.getLogger(_CLEANER_LOGGER)
    before = list(logger.filters)
    try:
        quiet_state_api_warnings()
        with caplog.at_level(logging.WARNING, logger=_CLEANER_LOGGER):
            logger.warning("Failed to query Ray Train Controller actor state. "
                           "State API may be temporarily unavailable. Continuing to monitor.")
            logger.warning("Failed to remove placement group")
        assert [r.getMessage() for r in caplog.records] == ["Failed to remove placement group"]
    finally:
        logger.filters[:] = before


def test_a_local_cluster_gets_the_inline_object_size_and_metrics_setting_and_an_existing_one_is_left_alone(
        monkeypatch):
    import ray

    from workflows.platform.raycluster import RayConfig, init_ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    init_ray(RayConfig(progress_bars=False, inline_object_kb=8192))
    init_ray(RayConfig(progress_bars=False))
    init_ray(RayConfig(progress_bars=False, metrics=False))
    assert calls[0]["_system_config"] == {"max_direct_call_object_size": 8 * 1024 * 1024}
    assert calls[1]["_system_config"] is None  # Ray's own default
    assert calls[2]["_system_config"] == {"enable_metrics_collection": False}
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    init_ray(RayConfig(progress_bars=False, inline_object_kb=8192, metrics=False))
    assert "_system_config" not in calls[3]  # a running cluster's settings are its own
