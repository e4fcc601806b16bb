"""Shared fixtures for afhub tests.

Index (scope: what it gives):
- ``start_facility`` (session): ``start_facility(values, name=None) -> Facility``; a real
  ``afhub up`` (hub + proxy + demo IdP) on free loopback ports, stopped at session end.
- ``facility`` (module): the embedded default (``hub_config/examples/local.yaml``) running.
- ``example_values`` (function): ``example_values(name) -> dict`` of ``hub_config/examples``.
- ``browser`` (module): Debian's headless Chromium through Playwright (fails under CI=true when
  Chromium is missing, since ``make test`` installs it; skips otherwise).

Session hooks: ``pytest_configure`` snapshots what exists (``tests/leaks.py``: the session's
own TMPDIR, pytest as child subreaper, accounts); ``pytest_sessionfinish`` fails the session
when a process, port, Slurm job, Dask cluster, system account or temporary directory is left.
Hypothesis profiles: ``afhub`` (default, 2,000 examples) and ``thorough`` (20,000).

See ``tests/facility.py`` for ``Facility`` (``login``, ``admin_api``, ``log_text``, pids)
and ``HubSession`` (``get``/``post``/``api``, ``spawn``, ``wait_ready``, ``stop_server``).
"""

from __future__ import annotations

import itertools
import os

import leaks
import pytest
from facility import ACCOUNT_PREFIXES, CHROMIUM, CHROMIUM_ARGS, Facility, env_flag
from facility import example_values as _example_values
from hypothesis import HealthCheck, settings

_counter = itertools.count()

# Hypothesis: the suite's profile runs every property at least 2,000 examples unless the test
# sets its own count (the live-process surfaces, tests/test_hostile_routes.py, size theirs
# from this). `pytest --hypothesis-profile thorough` for ten times as many.
_PROFILE = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("afhub", max_examples=2000, **_PROFILE)
settings.register_profile("thorough", max_examples=20000, **_PROFILE)
settings.load_profile("afhub")


def pytest_configure(config):
    # the session's own TMPDIR and process snapshot, before any test makes either
    leaks.start()


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when it left a process, port, Slurm job, Dask cluster, system
    account or temporary directory behind (tests/leaks.py)."""
    problems = leaks.leftovers(ACCOUNT_PREFIXES)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if problems:
        if reporter is not None:
            reporter.write_line("")
            reporter.write_sep("=", "left behind by the test session", red=True)
            for line in problems:
                reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if session.exitstatus == 0:
        leaks.cleanup()


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
