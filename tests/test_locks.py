"""The locks: every environment afhub installs is installed from one (``make lock``).

- ``requirements-hub.txt``: the hub's ``.venv`` (pyproject.toml's dependencies with the ``test``
  extra, and what builds afhub), what ``make setup`` installs.
- ``images/analysis/requirements.txt``: the server environment (``make server-env``) and the
  analysis image, compiled from ``images/analysis/requirements.in`` under the hub lock.

pyproject.toml keeps ranges (a library must not pin); these tests hold the ranges, the locks and
the installed environments to each other, and check the locks resolve for aarch64 too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from afhub.spawner.local import server_environment
from facility import REPO
from locks import (
    LockError,
    conflicts,
    disagreements,
    project_requirements,
    read,
    read_inputs,
    read_lock,
)
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HUB_LOCK = REPO / "requirements-hub.txt"
SERVER_LOCK = REPO / "images" / "analysis" / "requirements.txt"
SERVER_INPUTS = REPO / "images" / "analysis" / "requirements.in"

HASH = "    --hash=sha256:" + "0" * 64


# ---- the comparisons themselves (tables) ---------------------------------------------------


@pytest.mark.parametrize(
    "text, pins",
    [
        (f"pyyaml==6.0.4 \\\n{HASH}\n    # via afhub\n", {"pyyaml": "6.0.4"}),
        (f"# header\nJupyter_Server==2.21.1 \\\n{HASH}\n", {"jupyter-server": "2.21.1"}),
        (f"dask[complete]==2026.8.0 \\\n{HASH}\n{HASH}\n", {"dask": "2026.8.0"}),
    ],
)
def test_read_lock(text, pins):
    assert read_lock(text) == pins


@pytest.mark.parametrize(
    "text, problem",
    [
        (f"pyyaml>=6 \\\n{HASH}\n", "not pinned"),
        ("pyyaml==6.0.4\n", "no hashes for pyyaml"),
        (f"pyyaml==6.0.4 \\\n{HASH}\nPyYAML==6.0.3 \\\n{HASH}\n", "pinned twice"),
    ],
)
def test_read_lock_refuses_what_is_not_a_lock(text, problem):
    with pytest.raises(LockError, match=problem):
        read_lock(text)


@pytest.mark.parametrize(
    "requirement, pins, problems",
    [
        ("jupyterhub>=5", {"jupyterhub": "6.1.1"}, []),
        ("jupyterhub>=7", {"jupyterhub": "6.1.1"}, ["jupyterhub>=7: the lock pins 6.1.1"]),
        ("batchspawner==1.3.0", {"batchspawner": "1.2.0"}, ["the lock pins 1.2.0"]),
        ("PyYAML", {"pyyaml": "6.0.4"}, []),
        ("psutil", {}, ["psutil: not in the lock"]),
        ("pywin32; sys_platform == 'win32'", {}, []),  # not for the locks' platform
        ("tomli; python_version < '3.11'", {}, []),
    ],
)
def test_disagreements(requirement, pins, problems):
    got = disagreements([Requirement(requirement)], pins)
    assert len(got) == len(problems)
    for line, want in zip(got, problems, strict=True):
        assert want in line


def test_conflicts():
    hub = {"ipython": "9.19.1", "pyyaml": "6.0.4", "oauthenticator": "17.4.0"}
    server = {"ipython": "9.18.1", "pyyaml": "6.0.4", "uproot": "5.7.7"}
    assert conflicts(hub, server) == {"ipython": ("9.19.1", "9.18.1")}


# ---- the repository's locks ----------------------------------------------------------------


def test_locks_are_locks():
    for lock in (HUB_LOCK, SERVER_LOCK):
        assert len(read_lock(read(lock))) > 50, lock


def test_pyproject_ranges_admit_the_hub_lock():
    requirements = project_requirements(read(REPO / "pyproject.toml"))
    requirements += read_inputs(read(REPO / "requirements-hub.in"))
    assert disagreements(requirements, read_lock(read(HUB_LOCK))) == []


def test_server_inputs_admit_the_server_lock():
    requirements = read_inputs(read(SERVER_INPUTS))
    assert {"jupyterhub", "jupyterlab", "ipykernel", "uproot"} <= {
        canonicalize_name(r.name) for r in requirements
    }
    assert disagreements(requirements, read_lock(read(SERVER_LOCK))) == []


def test_hub_and_server_pin_shared_packages_alike():
    """One Jupyter stack: a package both environments have is at one version (the server lock
    is compiled under the hub lock's constraints)."""
    hub, server = read_lock(read(HUB_LOCK)), read_lock(read(SERVER_LOCK))
    assert {"jupyterhub", "jupyter-server", "tornado", "pyyaml"} <= hub.keys() & server.keys()
    assert conflicts(hub, server) == {}


def _installed(python: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return {canonicalize_name(n): v for n, v in json.loads(out.stdout).items()}


def test_the_hub_environment_is_its_lock():
    """What `make setup` installed is what the lock pins (nothing newer picked by a resolver)."""
    pins = read_lock(read(HUB_LOCK))
    wrong = {}
    for name, version in pins.items():
        try:
            got = metadata.version(name)
        except metadata.PackageNotFoundError:
            got = None
        if got != version:
            wrong[name] = (version, got)
    assert wrong == {}


def test_the_server_environment_is_exactly_its_lock():
    env = Path(server_environment())
    if not (env / "bin" / "python").exists():
        pytest.fail(f"no server environment at {env}; `make server-env` builds it")
    installed = _installed(str(env / "bin" / "python"))
    assert installed.pop("afhub", None) is not None  # afhub itself, installed --no-deps
    assert installed == read_lock(read(SERVER_LOCK))


# ---- aarch64 -------------------------------------------------------------------------------


def _lock_verify(**overrides: str) -> subprocess.CompletedProcess:
    args = [
        "make",
        "-s",
        "-C",
        str(REPO),
        "lock-verify",
        *(f"{k}={v}" for k, v in overrides.items()),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_locks_resolve_unchanged_for_aarch64():
    """Each lock resolved again for Linux aarch64 (binary wheels only, metadata from the index:
    no wheel is downloaded) pins exactly what it pins."""
    r = _lock_verify()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "requirements-hub.txt: " in r.stdout and "pins resolve unchanged" in r.stdout
    assert "images/analysis/requirements.txt: " in r.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_a_pin_without_aarch64_wheels_fails_the_check(tmp_path):
    """htcondor 23.0.28 was published with x86_64 wheels only: a hub lock pinning it fails."""
    lines = read(HUB_LOCK).splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("htcondor=="))
    end = start + 1
    while end < len(lines) and lines[end].startswith(" "):
        end += 1
    bad = tmp_path / "hub.txt"
    bad.write_text("".join([*lines[:start], f"htcondor==23.0.28 \\\n{HASH}\n", *lines[end:]]))
    r = _lock_verify(HUB_LOCK=str(bad), SERVER_LOCK=os.path.relpath(SERVER_LOCK, REPO))
    assert r.returncode != 0
    assert "htcondor" in r.stdout + r.stderr


def test_image_locks_pin_shared_packages_alike():
    """The GPU image's additions and the hub image's lock keep the version of every package
    their base lock has (each is compiled under it); neither has the demo provider."""
    hub, server = read_lock(read(HUB_LOCK)), read_lock(read(SERVER_LOCK))
    gpu = read_lock(read(REPO / "images" / "analysis" / "requirements-gpu.txt"))
    hub_image = read_lock(read(REPO / "images" / "hub" / "requirements.txt"))
    assert {"cupy-cuda12x", "nvidia-cuda-runtime-cu12"} <= gpu.keys()
    assert {"jupyterhub", "jupyterhub-kubespawner", "oauthenticator"} <= hub_image.keys()
    assert conflicts(server, gpu) == {}
    assert conflicts(hub, hub_image) == {}
    assert "oidc-provider-mock" not in hub_image.keys() | gpu.keys()
