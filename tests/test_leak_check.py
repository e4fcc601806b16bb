"""The session's leak check (``tests/leaks.py``, hooked in ``tests/conftest.py``) itself.

Each case runs a real pytest session of its own (``test_scenario`` below, through the same
conftest) in a subprocess:

- a session that leaves a detached process (double-forked, in a session of its own), a
  temporary directory, Dask directories in the shared scratch roots and, as root, a
  system account under a facility prefix and a bench's account (fixed prefix, home in the
  session's TMPDIR) fails, and the report names each one; a bench account of another session
  (home elsewhere) made meanwhile is not named;
- a clean session (it started and waited for a process, removed its temporary directory, left
  only the scratch roots' lock files as dask does, in ``dask-scratch-space`` and in the
  ``dask-scratch-space-<uid>`` it falls back to when another account owns the first) passes
  and removes its TMPDIR.

``test_scenario`` does nothing in the suite's own session (``AFHUB_LEAK_SCENARIO`` unset).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCENARIO = "AFHUB_LEAK_SCENARIO"
PIDFILE = "AFHUB_LEAK_PIDFILE"
ACCOUNT = "afleak-"  # the prefix the leaking session registers as a facility's
BENCH_ACCOUNTS = ("afstormleak-ours", "afstormleak-theirs")  # leaks.FIXED_ACCOUNTS' "afstorm"


def test_scenario():
    """One inner session's body: what it leaves (or not) depends on ``AFHUB_LEAK_SCENARIO``."""
    scenario = os.environ.get(SCENARIO)
    if not scenario:
        return
    import facility

    tmp = tempfile.gettempdir()
    scratch = Path(tmp, "dask-scratch-space")
    # dask's fallback root when another account owns the first (a per-user worker's)
    fallback = Path(tmp, f"dask-scratch-space-{os.getuid() + 1000}")
    for root in (scratch, fallback):
        root.mkdir()
        for lock in ("global.lock", "purge.lock"):  # what dask leaves there by design
            (root / lock).touch()
    if scenario == "clean":
        subprocess.run(["true"], check=True)
        with tempfile.TemporaryDirectory(prefix="tidy-"):
            pass
        return
    assert scenario == "leak"
    # a daemon: its parent shell exits at once, so only the subreaper (pytest) still has it
    out = subprocess.run(
        ["sh", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    Path(os.environ[PIDFILE]).write_text(out.stdout.strip())
    tempfile.mkdtemp(prefix="leaky-")
    (scratch / "worker-leaky").mkdir()
    (fallback / "scheduler-leaky").mkdir()
    if os.geteuid() == 0:
        facility.ACCOUNT_PREFIXES.add(ACCOUNT)
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        ACCOUNT + "x"], check=True)  # fmt: skip
        for name, home in zip(BENCH_ACCOUNTS, (tmp, "/nonexistent/afstorm"), strict=True):
            subprocess.run(["useradd", "--no-create-home", "--home-dir", f"{home}/{name}",
                            "--shell", "/usr/sbin/nologin", name], check=True)  # fmt: skip


def inner_session(scenario: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        SCENARIO: scenario,
        PIDFILE: str(tmp_path / "pid"),
        "TMPDIR": str(tmp_path),  # its session TMPDIR is made in here, in our tmp_path
        "PYTEST_ADDOPTS": "-p no:cacheprovider",
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", f"{__file__}::test_scenario"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def session_dirs(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("afhub-session-*"))


def test_a_session_that_leaves_things_fails_and_names_them(tmp_path):
    pid = None
    try:
        r = inner_session("leak", tmp_path)
        out = r.stdout + r.stderr
        pid = int((tmp_path / "pid").read_text())
        assert "1 passed" in out, out  # the test passed; the session did not
        assert r.returncode == pytest.ExitCode.TESTS_FAILED, out
        assert "left behind by the test session" in out, out
        assert re.search(rf"process: pid {pid} \[\w+\] sleep 300", out), out
        [session] = session_dirs(tmp_path)  # kept for the report
        assert f"temporary directory or file: {session}/leaky-" in out, out
        assert f"{session}/dask-scratch-space/worker-leaky" in out, out
        assert f"{session}/dask-scratch-space-{os.getuid() + 1000}/scheduler-leaky" in out, out
        assert "global.lock" not in out, out
        if os.geteuid() == 0:
            assert f"system account: {ACCOUNT}x " in out, out
            assert f"system account: {BENCH_ACCOUNTS[0]} " in out, out
            assert BENCH_ACCOUNTS[1] not in out, out  # not this session's
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            reap(pid)  # it was re-parented to us: this session is a subreaper too
        if os.geteuid() == 0:
            for name in (ACCOUNT + "x", *BENCH_ACCOUNTS):
                subprocess.run(["userdel", name], capture_output=True)


def reap(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # not ours, or already reaped
        if done:
            return
        time.sleep(0.1)


def test_a_clean_session_passes_and_removes_its_tmpdir(tmp_path):
    r = inner_session("clean", tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "left behind" not in out, out
    assert session_dirs(tmp_path) == [], out
