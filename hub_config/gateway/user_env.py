"""Clusters in their owner's own environment (the ``environment`` option): which prefixes an
owner may name and whether one can run a scheduler and workers.

Pure: :func:`path_problem` (inside the owner's home or an allowed root), :func:`parse_probe`
and :func:`requirements_problem` (the probe's versions -> what to install). The I/O, in
``clusters.OwnedClusters.user_environment``: the ownership walk (the token files' walk,
``server_ext/token.private_dir_problem``: from ``/`` with directory descriptors, every
directory root's or the owner's, a link followed only if root or the owner owns it and its
target walked the same way, the environment itself the owner's and writable by nobody else),
then :data:`PROBE` run by the environment's Python *as the owner* (never as root: it is the
owner's code). What must not live here: the option's definition (``server_ext/dask_options``).
"""

from __future__ import annotations

import inspect
import json
import os
import shlex
from collections.abc import Iterable, Mapping

from afhub.server_ext import dask_options, dask_versions

# what a scheduler and a worker of the local and Slurm backends import: distributed's CLI
# (`python -m dask scheduler|worker`), dask-gateway's scheduler preload and afhub's preload
# (the dashboard guard) and worker plugins (the data-access token)
REQUIRED = ("dask", "distributed", "dask_gateway", "afhub")
PIP_NAMES = {"dask_gateway": "dask-gateway"}

# runs in the owner's environment: its versions (dask_versions.package_versions, by source:
# afhub may be missing there) and prefix, as one JSON line
PROBE = (
    inspect.getsource(dask_versions.package_versions)
    + f"CHECKED_PACKAGES = {dask_versions.CHECKED_PACKAGES!r}\n"
    + f"DISTRIBUTIONS = {dask_versions.DISTRIBUTIONS!r}\n"
    + """
import json, os, sys, sysconfig
from importlib import metadata
out = package_versions()
try:
    out["afhub"] = metadata.version("afhub")
except metadata.PackageNotFoundError:
    out["afhub"] = None
out["prefix"] = sys.prefix
out["conda"] = os.path.isdir(os.path.join(sys.prefix, "conda-meta"))
out["site"] = sysconfig.get_paths()["purelib"]
print(json.dumps(out))
"""
)


def path_problem(path: str, *, home: str, roots: Iterable[str] = ()) -> str | None:
    """Why ``path`` (an absolute, normalized path: ``dask_options.check_path``) cannot be an
    environment of the owner whose home is ``home`` (``None``: it may be). It must lie strictly
    inside the home or one of ``roots`` (the operator's extra places); ownership is the walk's
    job, not this rule's."""
    allowed = [os.path.normpath(r) for r in (home, *roots) if r]
    if any(dask_options.path_inside(path, r) and path != r for r in allowed):
        return None
    where = " or ".join(allowed) or "your home"
    return (
        f"{path} is not inside your home ({where}): only your own environments can run your workers"
    )


def parse_probe(stdout: str) -> dict | None:
    """The probe's JSON line (the last line of ``stdout``), or ``None`` if there is none."""
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    try:
        out = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return out if isinstance(out, dict) else None


def _series(version: str | None) -> str | None:
    """``"2026.3.0"`` -> ``"2026.3"`` (dask-gateway's client and server speak one series;
    ``"3.11.7"`` -> ``"3.11"``, the Python a .pth may share site-packages across)."""
    return ".".join(version.split(".")[:2]) if version else None


def requirements_problem(
    found: Mapping, *, gateway: str, facility: Mapping, facility_python: str, path: str
) -> str | None:
    """What the environment at ``path`` (its probe's versions ``found``) lacks to run a
    scheduler and workers, as what to install (``None``: nothing). ``gateway``: the gateway's
    dask-gateway-server version (the client side must be the same series); ``facility``: the
    server environment's versions (the pins suggested); ``facility_python``: its interpreter
    (a venv made from it with ``--system-site-packages`` has everything)."""
    pins: list[str] = []
    why: list[str] = []
    missing = [p for p in ("dask", "distributed", "dask_gateway") if not found.get(p)]
    if missing:
        why.append("no " + ", ".join(PIP_NAMES.get(p, p) for p in missing))
    if found.get("dask") and found.get("distributed") and found["dask"] != found["distributed"]:
        why.append(f"dask {found['dask']} with distributed {found['distributed']}")
        missing += ["dask", "distributed"]
    if found.get("dask_gateway") and _series(found["dask_gateway"]) != _series(gateway):
        why.append(f"dask-gateway {found['dask_gateway']} (the gateway is {gateway})")
        missing.append("dask_gateway")
    for p in dict.fromkeys(missing):
        version = gateway if p == "dask_gateway" else facility.get(p)
        pins.append(f"{PIP_NAMES.get(p, p)}=={version}" if version else PIP_NAMES.get(p, p))
    out = []
    if why:
        out.append(
            f"has {'; '.join(why)}: install them in it with "
            f"`{shlex.quote(os.path.join(path, 'bin', 'python'))} -m pip install "
            + " ".join(shlex.quote(p) for p in pins)
            + "`"
        )
    want_afhub = facility.get("afhub")
    if found.get("afhub") != want_afhub:
        has = f"afhub {found['afhub']}" if found.get("afhub") else "no afhub"
        out.append(
            f"has {has} (schedulers and workers load the facility's afhub {want_afhub}): "
            + (_conda_fix(found, facility, path) if found.get("conda") else _venv_fix(
                facility_python, path))
        )  # fmt: skip
    if not out:
        return None
    return f"your environment {path} cannot run Dask workers: it " + "; and it ".join(out)


def _venv_fix(facility_python: str, path: str) -> str:
    return (
        f"make the environment from the facility's Python, `{shlex.quote(facility_python)} -m "
        f"venv --system-site-packages {shlex.quote(path)}`, and install your packages in it"
    )


def _conda_fix(found: Mapping, facility: Mapping, path: str) -> str:
    """A conda environment keeps its own packages and reaches the facility's (afhub among
    them) after them through a ``.pth`` file, which needs the facility's Python minor version."""
    site, theirs = facility.get("site"), found.get("site")
    if not site or not theirs:
        return "install the facility's afhub in it"
    pth = os.path.join(theirs, "afhub-facility.pth")
    add = f"`echo {shlex.quote(site)} > {shlex.quote(pth)}`"
    want, have = _series(facility.get("python")), _series(found.get("python"))
    if want and have != want:
        return (
            f"it runs Python {have} and the facility's packages need Python {want}: recreate "
            f"it with `conda create -p {shlex.quote(path)} python={want}` (and your packages), "
            f"then add the facility's packages after its own with a .pth file in its "
            f"site-packages holding {shlex.quote(site)}"
        )
    return f"add the facility's packages after its own (it is a conda environment): {add}"
