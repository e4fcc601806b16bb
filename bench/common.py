"""What every bench needs to run from a checkout with any venv (editable or ``pip install .``),
as root or as a plain user. Imported by the bench scripts (``bench/`` is ``sys.path[0]`` when
one runs as ``python bench/<name>.py``); nothing here is timed.

- :func:`use_checkout`: the checkout's ``tests/`` helpers (``Facility``, ``Kernel``, Slurm) on
  ``sys.path`` and its ``node_modules/.bin`` (configurable-http-proxy, which ``afhub up`` finds
  by itself only when afhub is installed editable) on ``PATH``;
- :func:`shared_tempdir`: a temporary directory the per-user accounts a root hub creates can
  read (``tempfile.mkdtemp`` makes 0700 directories, fine for the hub's own state only);
- :func:`system_python`: an interpreter those accounts can execute (the venv's may live under
  ``/root``);
- :func:`local_accounts`: the local backend's ``accounts`` setting for a bench hub serving
  many demo users: per-user system accounts as root, one shared account otherwise;
- :func:`smoke_arg`: ``--smoke``, the few-rounds mode ``tests/test_bench_smoke.py`` runs: the
  same code path, small sizes, and no ratio to judge.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent


def use_checkout() -> None:
    tests = str(CHECKOUT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    proxy_bin = CHECKOUT / "node_modules" / ".bin"
    if proxy_bin.is_dir() and str(proxy_bin) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{proxy_bin}{os.pathsep}{os.environ.get('PATH', '')}"


def shared_tempdir(prefix: str) -> Path:
    """A new directory readable and traversable by every account (0755); remove it yourself."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def system_python() -> str:
    """``/usr/bin/python3`` when present (every account can run it), else this interpreter."""
    for candidate in ("/usr/bin/python3", shutil.which("python3"), sys.executable):
        if candidate and os.access(candidate, os.X_OK) and not candidate.startswith("/root/"):
            return candidate
    return sys.executable


def local_accounts() -> dict:
    """``backend.local`` settings for a bench hub whose demo users all start servers: as root
    none (``auto``: a system account per user); as a plain user ``accounts: shared-uid``, since
    the default there (single-user mode) serves one user only. Every server then runs as the
    caller's account (they could read each other's files): fine for demo users on a bench,
    never for people."""
    return {} if os.geteuid() == 0 else {"accounts": "shared-uid"}


def smoke_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a few rounds at small sizes through the same code path (the test suite's check "
        "that this bench still runs); its figures mean nothing",
    )
