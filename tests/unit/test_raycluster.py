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
