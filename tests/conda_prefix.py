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
PyPI: into a staging directory, then copied in); everything else (ipykernel, afhub and the packages they need) reaches it through a
``.pth`` line naming the server environment's site-packages, after the prefix's own, as the
venvs of ``kernels_helpers.make_user_venv`` get theirs (no network).

For another account (``uid``, when root) the prefix is built by that account
(``kernels_helpers.as_user``), its missing parent directories too: root writes nothing in the
user's home (ARCHITECTURE §10). Root's uv (and its cache, which the account cannot read) only
fills a root-owned staging directory that anyone may read; the account copies it in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kernels_helpers import as_user, check_uid, server_python

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


# the prefix, built by the Python given (the server environment's base: any account may run it),
# as the account that will own it; argv: prefix, interpreter, stdlib, pythonX.Y, staging
# directory (the packages uv installed there with ``--target``), server environment's
# site-packages
_BUILD = """
import os, shutil, sys

path, executable, stdlib, pyver, staging, server_site = sys.argv[1:]
os.makedirs(path, exist_ok=True)
os.mkdir(os.path.join(path, "conda-meta"))
with open(os.path.join(path, "conda-meta", "history"), "x") as f:
    f.write("==> 2026-01-01 00:00:00 <==\\n# cmd: afhub tests (conda layout, no conda)\\n")
bin = os.path.join(path, "bin")
os.mkdir(bin)
shutil.copy2(executable, os.path.join(bin, pyver))
os.symlink(pyver, os.path.join(bin, "python"))
os.symlink(pyver, os.path.join(bin, "python3"))
lib = os.path.join(path, "lib", pyver)
skip = ("EXTERNALLY-MANAGED", "site-packages", "dist-packages", "test")
shutil.copytree(
    stdlib, lib, symlinks=True,
    ignore=lambda d, names: [n for n in names if n in skip or n.startswith("config-")],
)
site = os.path.join(lib, "site-packages")
os.mkdir(site)
debian_site = os.path.join(path, "local", "lib", pyver, "dist-packages")
os.makedirs(os.path.dirname(debian_site))
os.symlink(os.path.relpath(site, os.path.dirname(debian_site)), debian_site)
os.symlink(os.path.join("..", "bin"), os.path.join(path, "local", "bin"))
python = os.path.join(bin, "python").encode()
for name in os.listdir(staging):
    src = os.path.join(staging, name)
    if name == ".lock":  # uv's
        continue
    if name == "bin":  # scripts, for this prefix's Python
        for script in os.listdir(src):
            with open(os.path.join(src, script), "rb") as f:
                data = f.read()
            if data.startswith(b"#!"):
                data = b"#!" + python + data[data.index(b"\\n"):]
            with open(os.path.join(bin, script), "xb") as f:
                f.write(data)
            os.chmod(os.path.join(bin, script), 0o755)
    elif os.path.isdir(src) and not os.path.islink(src):
        shutil.copytree(src, os.path.join(site, name), symlinks=True)
    else:
        shutil.copy2(src, os.path.join(site, name), follow_symlinks=False)
if server_site:
    with open(os.path.join(site, "_afhub_test_server_env.pth"), "x") as f:
        f.write(server_site + "\\n")
"""


def make_conda_prefix(path: Path, *, uid: int | None = None, facility: bool = True) -> Path:
    """A conda-layout environment at ``path`` (see the module docstring), owned by ``uid``
    (default: this process) and writable by it alone: as root for another account, built by it.
    ``facility=False``: without the ``.pth`` to the server environment (so without afhub)."""
    check_uid(uid)
    base = server_base()
    pyver = "python" + base["version"]
    server, server_site = server_python()
    pins = [f"{p}=={v}" for p, v in base["packages"].items()]
    user = {"check": True, "env": {"PATH": "/usr/bin:/bin"}, **as_user(uid)}
    # root's uv and cache fill a directory only root writes and anyone reads
    staging = tempfile.mkdtemp(prefix="afhub-conda-pkgs-")
    try:
        os.chmod(staging, 0o755)
        packages, scratch = os.path.join(staging, "packages"), os.path.join(staging, "tmp")
        os.mkdir(scratch)  # uv leaves a lock file in TMPDIR
        subprocess.run(
            [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--no-deps",
             "--link-mode", "copy", "--python", server, "--target", packages, *pins],
            check=True, capture_output=True,
            env={**os.environ, "VIRTUAL_ENV": "", "TMPDIR": scratch},
        )  # fmt: skip
        os.chmod(packages, 0o755)
        build = [base["executable"], "-c", _BUILD, str(path), base["executable"], base["stdlib"]]
        subprocess.run([*build, pyver, packages, server_site if facility else ""], **user)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    python = path / "bin" / "python"
    found = subprocess.run(
        [str(python), "-c", _WHERE], capture_output=True, text=True, **user
    ).stdout.split("\n")
    site = path / "lib" / pyver / "site-packages"
    assert found[0] == f"{path} {path}", found  # its own prefix, no venv
    assert found[1:3] == [str(site), str(path / "bin")], found  # installs: the conda places
    return path
