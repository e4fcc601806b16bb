"""A conda-layout prefix built without conda: what matters to afhub is the layout.

No conda runs here and conda channels are out of reach, but what afhub sees of a conda
environment is its layout, and that can be made from the system's Python:

- ``conda-meta/history`` (how kernel discovery, ``server_ext/env_scan._env_kind``, and conda
  itself recognise a conda environment) and no ``pyvenv.cfg``;
- a real interpreter, ``bin/python3.11`` (copied, not linked: a venv's is a link) with
  ``bin/python`` and ``bin/python3`` linking to it, and the standard library copied to
  ``lib/python3.11``: Python takes the prefix holding ``lib/python3.11/os.py`` next to its
  executable as ``sys.prefix``, so ``sys.prefix == sys.base_prefix ==`` the prefix;
- its packages in ``lib/python3.11/site-packages``.

The interpreter is the server environment's base Python (the system's: every account may run
it, unlike a Python under root's home). Debian's build looks for packages in
``local/lib/python3.11/dist-packages`` (and installs scripts in ``local/bin``) instead, so
those are links to ``lib/python3.11/site-packages`` and ``bin``: the interpreter, pip and uv
use the conda places. Debian's
``EXTERNALLY-MANAGED`` marker is left out of the stdlib copy (a conda environment has none).

:func:`make_conda_prefix` installs ``dask``, ``distributed`` and ``dask-gateway`` at the server
environment's versions (the kernel's) into the prefix itself, with uv (from its cache, else
PyPI); everything else (ipykernel, afhub and the packages they need) reaches it through a
``.pth`` line naming the server environment's site-packages, after the prefix's own, as the
venvs of ``kernels_helpers.make_user_venv`` get theirs (no network).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kernels_helpers import server_python

# what a scheduler and a worker need from the environment itself (the rest: the .pth)
OWN_PACKAGES = ("dask", "distributed", "dask-gateway")

_VERSIONS = """
import json, sys, sysconfig
from importlib import metadata
print(json.dumps({
    "executable": sys._base_executable,
    "stdlib": sysconfig.get_paths()["stdlib"],
    "version": "%d.%d" % sys.version_info[:2],
    "packages": {p: metadata.version(p) for p in sys.argv[1:]},
}))
"""

_WHERE = """
import os, sys, sysconfig
print(sys.prefix, sys.base_prefix)
print(os.path.realpath(sysconfig.get_paths()["purelib"]))
print(os.path.realpath(sysconfig.get_paths()["scripts"]))
"""


def server_base() -> dict:
    """The server environment's base interpreter, its stdlib and version, and the versions of
    :data:`OWN_PACKAGES` there."""

    python, _ = server_python()
    out = subprocess.run(
        [python, "-c", _VERSIONS, *OWN_PACKAGES], check=True, capture_output=True, text=True
    ).stdout
    base = json.loads(out)
    base["executable"] = os.path.realpath(base["executable"])
    # a system interpreter, not a venv's link to one
    assert not os.path.exists(os.path.join(os.path.dirname(base["executable"]), "pyvenv.cfg"))
    assert not os.path.exists(
        os.path.join(os.path.dirname(os.path.dirname(base["executable"])), "pyvenv.cfg")
    )
    return base


def make_conda_prefix(path: Path, *, uid: int | None = None) -> Path:
    """A conda-layout environment at ``path`` (see the module docstring), owned by ``uid``
    (default: this process) and writable by it alone."""
    base = server_base()
    pyver = "python" + base["version"]
    (path / "conda-meta").mkdir(parents=True)
    (path / "conda-meta" / "history").write_text(
        "==> 2026-01-01 00:00:00 <==\n# cmd: afhub tests (conda layout, no conda)\n"
    )
    (path / "bin").mkdir()
    shutil.copy2(base["executable"], path / "bin" / pyver)
    (path / "bin" / "python").symlink_to(pyver)
    (path / "bin" / "python3").symlink_to(pyver)
    lib = path / "lib" / pyver
    shutil.copytree(
        base["stdlib"],
        lib,
        symlinks=True,
        ignore=lambda d, names: [
            n
            for n in names
            if n in ("EXTERNALLY-MANAGED", "site-packages", "dist-packages", "test")
            or n.startswith("config-")
        ],
    )
    site = lib / "site-packages"
    site.mkdir()
    debian_site = path / "local" / "lib" / pyver / "dist-packages"
    debian_site.parent.mkdir(parents=True)
    debian_site.symlink_to(os.path.relpath(site, debian_site.parent))
    (path / "local" / "bin").symlink_to(os.path.join("..", "bin"))
    python = path / "bin" / "python"
    found = subprocess.run(
        [str(python), "-c", _WHERE], check=True, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout.split("\n")  # fmt: skip
    assert found[0] == f"{path} {path}", found  # its own prefix, no venv
    assert found[1:3] == [str(site), str(path / "bin")], found  # installs: the conda places
    pins = [f"{p}=={v}" for p, v in base["packages"].items()]
    scratch = tempfile.mkdtemp(prefix="afhub-conda-uv-")  # uv leaves a lock file in TMPDIR
    try:
        subprocess.run(
            [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--no-deps",
             "--python", str(python), *pins],
            check=True, capture_output=True,
            env={**os.environ, "VIRTUAL_ENV": "", "TMPDIR": scratch},
        )  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _, server_site = server_python()
    (site / "_afhub_test_server_env.pth").write_text(server_site + "\n")
    if uid is not None:
        for p in [path, *path.rglob("*")]:
            os.lchown(p, uid, -1)
    return path
