"""afhub's hub-side loggers write into JupyterHub's log (hub_config/logs.py).

The end-to-end proof is in test_token_integration (the broker's "Refreshed data-access token
for bob" line is counted in the hub's log); here the routing rule itself.
"""

from __future__ import annotations

import logging

import pytest
from afhub.hub_config.logs import AFHUB_LOGGER, into_hub_log


@pytest.fixture
def restore():
    logger = logging.getLogger(AFHUB_LOGGER)
    parent, propagate = logger.parent, logger.propagate
    yield
    logger.parent, logger.propagate = parent, propagate


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_afhub_records_reach_the_hub_log_at_info(restore):
    app_log = logging.getLogger("test-hub-app")
    app_log.setLevel(logging.INFO)
    app_log.propagate = False
    handler = Collect()
    app_log.addHandler(handler)
    assert into_hub_log(app_log) is True
    logging.getLogger("afhub.tokens").info("Refreshed data-access token for %s", "bob")
    logging.getLogger("afhub.capacity").debug("not at INFO")
    assert [r.getMessage() for r in handler.records] == ["Refreshed data-access token for bob"]
    assert into_hub_log(app_log) is True  # idempotent: no second copy of each line
    logging.getLogger("afhub.tokens").warning("once")
    assert [r.getMessage() for r in handler.records][-1:] == ["once"]
    assert len(handler.records) == 2


def test_outside_a_running_hub_nothing_changes(restore, monkeypatch):
    from traitlets.config import Application

    monkeypatch.setattr(Application, "initialized", classmethod(lambda cls: False))
    before = logging.getLogger(AFHUB_LOGGER).parent
    assert into_hub_log() is False
    assert logging.getLogger(AFHUB_LOGGER).parent is before
