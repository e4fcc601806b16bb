"""The sidebar's "test access" in headless Chromium, through the real hub and the embedded
storage (``afhub up``'s XRootD origin and XCache): alice presses "Test access" for each
endpoint of the data-access section and sees it work; with the cache stopped (SIGSTOP: it
answers nothing), the cache's test says the server is down. Nothing is faked.
"""

from __future__ import annotations

import os
import signal

import pytest
from facility import example_values
from test_sidebar_browser import login_and_spawn, open_panel

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture(scope="module")
def fac(start_facility):
    values = example_values("local")
    values["culling"] = {"enabled": False}
    values["dask"]["enabled"] = False
    facility = start_facility(values, name="data-sidebar")
    yield facility
    facility.stop()


@pytest.fixture(scope="module")
def panel(fac, browser):
    page = login_and_spawn(browser, fac)
    return page, open_panel(page)


def press_test(panel, endpoint: str, timeout: float = 60_000):
    row = panel.locator(f'[data-endpoint="{endpoint}"]')
    row.get_by_role("button", name=f"Test access to {endpoint}").click()
    outcome = row.locator("[data-reason]")
    outcome.wait_for(timeout=timeout)
    return row, outcome


def test_each_endpoint_tests_access_with_the_current_token(panel):
    page, side = panel
    storage = side.locator('[aria-label="Storage endpoints"]')
    storage.wait_for(timeout=30_000)
    assert storage.locator("li[data-endpoint]").count() == 2
    for endpoint in ("cache", "origin"):
        row, outcome = press_test(side, endpoint)
        page.wait_for_function(
            "el => el.getAttribute('data-reason') === 'ok'", arg=outcome.element_handle()
        )
        assert outcome.inner_text().startswith("Access works:")
        assert "root://127.0.0.1:" in row.inner_text()


def test_a_stopped_cache_shows_server_down(fac, panel):
    page, side = panel
    pid = fac.pid_of("cache")
    os.kill(pid, signal.SIGSTOP)
    try:
        row = side.locator('[data-endpoint="cache"]')
        row.get_by_role("button", name="Test access to cache").click()
        page.wait_for_function(
            "() => document.querySelector('[data-endpoint=\"cache\"] [data-reason]')"
            "?.getAttribute('data-reason') === 'server_down'",
            timeout=60_000,
        )
        assert row.locator("[data-reason]").inner_text().startswith("Server down:")
    finally:
        os.kill(pid, signal.SIGCONT)
