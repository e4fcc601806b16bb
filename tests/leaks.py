"""What a test session leaves behind: a snapshot at its start, a comparison at its end.

``tests/conftest.py`` calls :func:`start` from ``pytest_configure`` and :func:`leftovers` from
``pytest_sessionfinish``; any leftover fails the session (exit status 1) with a report naming
each one. Attribution, so that other sessions on the same machine never count:

- processes: the pytest process becomes a child subreaper, so everything the suite started
  (hubs, proxies, providers, user servers, Dask schedulers and workers, XRootD, PostgreSQL,
  Slurm daemons and job steps, Chromium) stays its descendant even once orphaned; a
  descendant still running at the end is a leak, with the ports it listens on. Slurm jobs
  and Dask clusters are processes here (slurmstepd, ``dask scheduler``/``worker``), named as
  such in the report;
- temporary directories: the session gets its own ``TMPDIR`` (``tempfile`` and every
  subprocess use it); anything left in it but pytest's own ``pytest-of-*`` base is a leak,
  and the directory is removed afterwards (kept, for the report, when the session failed).
  Shared scratch roots a library makes there once and never removes (``SCRATCH_ROOTS``:
  dask's ``dask-scratch-space``, and the ``dask-scratch-space-<uid>`` it falls back to when
  another account made the first one) count only for what they hold beyond their lock files;
- system accounts: accounts created during the session whose names start with a prefix a
  facility of this session used (``facility.ACCOUNT_PREFIXES``), or the suite's fixed test
  accounts (``FIXED_ACCOUNTS``: made by benches, which run as subprocesses) whose home is in
  this session's ``TMPDIR`` (another session's bench makes its homes in its own), or the
  fixed names no home tells apart (``FIXED_NAMES``).

Nothing here runs between tests; it costs one process scan at each end of the session.
"""

from __future__ import annotations

import ctypes
import gc
import os
import pwd
import re
import shutil
import tempfile
import time

import psutil

PR_SET_CHILD_SUBREAPER = 36
# accounts the suite creates under fixed names (tests/, bench/)
FIXED_ACCOUNTS = ("afdask-", "aftbench-", "afstorm")  # afstorm: bench/spawn_storm.py
FIXED_NAMES = ("batchbench",)  # bench/slurm_spawn.py, home in /home
# shared scratch roots that libraries create in TMPDIR once and never remove, by design: only
# what is in them beyond their own lock files is a leak (dask: each worker's directory)
SCRATCH_ROOTS = {"dask-scratch-space": {"global.lock", "purge.lock"}}
# distributed's WorkSpace falls back to "<root>-<uid>" when the root belongs to another account
# (per-user servers and workers share the session's TMPDIR), and then to mkdtemp("<root>-")


def _scratch_root(name: str) -> str | None:
    """The scratch root ``name`` is (itself or one of its fallbacks), or None."""
    for root in SCRATCH_ROOTS:
        if name == root or re.fullmatch(re.escape(root) + r"-[A-Za-z0-9_]+", name):
            return root
    return None


_state: dict = {}


def start() -> None:
    """Snapshot at session start: subreaper, own TMPDIR, accounts."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    tmp = tempfile.mkdtemp(prefix="afhub-session-")
    os.chmod(tmp, 0o1777)  # as /tmp: per-user accounts' processes may use it too
    os.environ["TMPDIR"] = tmp
    tempfile.tempdir = tmp
    _state.update(
        tmp=tmp,
        accounts={pw.pw_name for pw in pwd.getpwall()},
        pid=os.getpid(),
    )


def _describe(p: psutil.Process) -> str:
    try:
        cmd = " ".join(p.cmdline())[:200] or p.name()
        kind = ""
        if "slurmstepd" in cmd:
            kind = "Slurm job step: "
        elif "dask" in cmd and (" scheduler" in cmd or " worker" in cmd):
            kind = "Dask cluster process: "
        ports = sorted(
            f"{c.laddr.ip}:{c.laddr.port}"
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        )
        listen = f" (listening on {', '.join(ports)})" if ports else ""
        return f"{kind}pid {p.pid} [{p.username()}] {cmd}{listen}"
    except psutil.Error:
        return f"pid {p.pid}"


def _living_descendants() -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(p.pid, os.WNOHANG)
                continue
            out.append(p)
        except (psutil.Error, ChildProcessError):
            continue
    return out


def leftovers(account_prefixes, *, grace: float = 15) -> list[str]:
    """Everything the session left: one line each (empty: nothing)."""
    if not _state or _state["pid"] != os.getpid():  # an xdist worker or a forked child
        return []
    problems = []
    gc.collect()  # objects no test holds any more release what they made (weakref.finalize)
    deadline = time.monotonic() + grace
    alive = _living_descendants()
    while alive and time.monotonic() < deadline:  # what is still shutting down
        time.sleep(0.5)
        alive = _living_descendants()
    problems += [f"process: {_describe(p)}" for p in alive]

    ours = tuple(p for p in set(account_prefixes) if p)
    tmp = os.path.join(_state["tmp"], "")
    for pw in pwd.getpwall():
        if pw.pw_name in _state["accounts"]:
            continue
        if (
            pw.pw_name.startswith(ours)
            or pw.pw_name in FIXED_NAMES
            or (pw.pw_name.startswith(FIXED_ACCOUNTS) and pw.pw_dir.startswith(tmp))
        ):
            problems.append(f"system account: {pw.pw_name} (uid {pw.pw_uid}, home {pw.pw_dir})")

    problems += [f"temporary directory or file: {path}" for path in _tmp_leftovers(_state["tmp"])]
    return problems


def _tmp_leftovers(tmp: str) -> list[str]:
    """Paths left in the session's TMPDIR: all but pytest's own base and the shared scratch
    roots' lock files."""
    out = []
    try:
        entries = sorted(e for e in os.listdir(tmp) if not e.startswith("pytest-of-"))
    except OSError:
        return out
    for e in entries:
        path = os.path.join(tmp, e)
        root = _scratch_root(e)
        if root and os.path.isdir(path) and not os.path.islink(path):
            try:
                inside = sorted(set(os.listdir(path)) - SCRATCH_ROOTS[root])
            except OSError:
                inside = []
            out += [os.path.join(path, i) for i in inside]
        else:
            out.append(path)
    return out


def cleanup() -> None:
    """Remove the session's TMPDIR (after the report, so the report can name what was in it)."""
    tmp = _state.get("tmp")
    if tmp and _state.get("pid") == os.getpid():
        shutil.rmtree(tmp, ignore_errors=True)
