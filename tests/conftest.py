"""Shared fixtures for afhub tests.

Index (scope: what it gives):
- ``start_facility`` (session): ``start_facility(values, name=None) -> Facility``; a real
  ``afhub up`` (hub + proxy + demo IdP) on free loopback ports, stopped at session end.
- ``facility`` (module): the embedded default (``hub_config/examples/local.yaml``) running.
- ``example_values`` (function): ``example_values(name) -> dict`` of ``hub_config/examples``.
- ``browser`` (module): Debian's headless Chromium through Playwright (fails under CI=true when
  Chromium is missing, since ``make test`` installs it; skips otherwise).

See ``tests/facility.py`` for ``Facility`` (``login``, ``admin_api``, ``log_text``, pids)
and ``HubSession`` (``get``/``post``/``api``, ``spawn``, ``wait_ready``, ``stop_server``).
"""

from __future__ import annotations

import itertools
import os

import pytest
from facility import CHROMIUM, CHROMIUM_ARGS, Facility, env_flag
from facility import example_values as _example_values

_counter = itertools.count()


@pytest.fixture(scope="session")
def start_facility(tmp_path_factory):
    started: list[Facility] = []

    def start(values: dict, name: str | None = None, **kw) -> Facility:
        workdir = tmp_path_factory.mktemp(name or f"facility{next(_counter)}")
        fac = Facility(values, workdir, **kw)
        started.append(fac)
        return fac.start()

    yield start
    for fac in started:
        fac.stop()


@pytest.fixture(scope="module")
def facility(tmp_path_factory):
    fac = Facility(_example_values("local"), tmp_path_factory.mktemp("default-facility"))
    fac.start()
    yield fac
    fac.stop()


@pytest.fixture
def example_values():
    return _example_values


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        if env_flag("CI"):
            pytest.fail(f"{CHROMIUM} is not installed, but `make test` installs it")
        pytest.skip(f"{CHROMIUM} is not installed (`make system-deps` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
