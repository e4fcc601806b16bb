"""The server environment of the local backend (`make server-env`).

User servers run as per-user system accounts when the hub is root, so the environment they run in
must be executable and readable by any account and hold afhub's server side; it is installed
from its lock (tests/test_locks.py holds it to the lock and to the hub's versions). `make test`
builds it before the tests run (AFHUB_SERVER_ENV names it); run directly, pytest uses the same
default the hub does.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from afhub.spawner.local import server_environment
from facility import REPO


def _server_env() -> Path:
    env = Path(server_environment())
    if not (env / "bin" / "jupyterhub-singleuser").exists():
        pytest.fail(f"no server environment at {env}; `make server-env` builds it")
    return env


@pytest.mark.skipif(os.geteuid() != 0, reason="per-user accounts need root")
def test_any_account_can_run_the_server_environment():
    env = _server_env()
    assert not str(env).startswith("/root"), env
    out = subprocess.run(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            str(env / "bin" / "python"),
            "-c",
            "import sys, afhub.server_ext, jupyterhub, jupyterlab, ipykernel; print(sys.prefix)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(env)
    # afhub is a real install, not a link back into a checkout others cannot read
    site = next((env / "lib").glob("python3*/site-packages"))
    assert (site / "afhub" / "server_ext" / "__init__.py").is_file()
    assert not list(site.glob("__editable__*afhub*"))
    # nothing in it is writable by others
    writable = [
        p
        for p in [env, *env.rglob("*")]
        if not p.is_symlink() and p.lstat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    ]
    assert writable[:5] == []


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_rebuilds_when_requirements_or_sources_change(tmp_path):
    """`make -q` (question mode: runs nothing) says the environment is stale after a change."""
    env = tmp_path / "env"  # a prefix that was never built is stale
    # -o: the hub's own install counts as built (this test is about the server environment)
    base = ["make", "-q", "-o", ".venv/.afhub-installed", "-C", str(REPO), f"SERVER_ENV={env}"]
    base.append("server-env")
    assert subprocess.run(base, capture_output=True).returncode == 1
    env.mkdir()
    stamp = env / ".afhub-built"
    sources = [REPO / "pyproject.toml", REPO / "images" / "analysis" / "requirements.txt"]
    for part in ("hub_config", "spawner", "authenticator", "server_ext", "images/analysis"):
        sources += [p for p in (REPO / part).rglob("*") if p.is_file()]
    lab = REPO / "labextension"
    for part in ("src", "style", "schema"):
        sources += [p for p in (lab / part).rglob("*") if p.is_file()]
    sources += [p for p in (lab / "package.json", lab / "yarn.lock") if p.exists()]
    newest = max(p.stat().st_mtime for p in sources)
    stamp.write_text(str(REPO) + "\n")
    os.utime(stamp, (newest + 1, newest + 1))
    assert subprocess.run(base, capture_output=True).returncode == 0
    for changed in ("images/analysis/requirements.txt", "server_ext/token.py", "pyproject.toml"):
        what_if = base[:2] + ["-W", changed] + base[2:]  # "pretend it was just modified"
        os.utime(stamp, (newest + 1, newest + 1))
        assert subprocess.run(what_if, capture_output=True).returncode == 1, changed
    # built by another checkout: rebuilt here
    stamp.write_text("/elsewhere\n")
    os.utime(stamp, (newest + 1, newest + 1))
    assert subprocess.run(base, capture_output=True).returncode == 1
