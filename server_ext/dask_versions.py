"""Package versions for the notebook API's version check (``DaskVersionWarning``).

:func:`package_versions` runs in the kernel and on the scheduler, and
:func:`cluster_package_versions` on the scheduler (``Client.run_on_scheduler``), so this module
imports the standard library only: importing ``afhub.server_ext.dask`` there would cost seconds
per process. It imports none of the checked packages either: a package the process has not
imported is read from its installed metadata. Workers are not asked at all: each reported its
versions (distributed's ``get_versions``) to the scheduler when it registered, which is what
:func:`cluster_package_versions` returns for them (a round trip to every worker cost ~0.1 s of
every ``new_cluster``).
"""

from __future__ import annotations

CHECKED_PACKAGES = ("python", "dask", "distributed", "dask_gateway", "cloudpickle", "msgpack")
# module name -> distribution name, where they differ
DISTRIBUTIONS = {"dask_gateway": "dask-gateway"}


def package_versions() -> dict:
    """This process's versions of :data:`CHECKED_PACKAGES` (``None``: not installed), for the
    notebook API's version check; runs in the kernel, on the scheduler and on the workers."""
    import platform
    import sys
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in CHECKED_PACKAGES[1:]:
        module = sys.modules.get(pkg)
        version = getattr(module, "__version__", None) if module is not None else None
        if version is None:  # not imported here: the installed distribution, without importing
            try:
                version = metadata.version(DISTRIBUTIONS.get(pkg, pkg))
            except metadata.PackageNotFoundError:
                version = None
        out[pkg] = None if version is None else str(version)
    return out


def _release(python: str | None) -> str | None:
    """distributed's ``"3.11.2.final.0"`` -> ``"3.11.2"`` (as ``platform.python_version()``)."""
    return ".".join(python.split(".")[:3]) if python else python


def cluster_package_versions(dask_scheduler=None) -> dict:
    """On the scheduler: ``{"scheduler": <its package_versions()>, "workers": {address:
    versions}}``, the workers' as they reported them when they registered (those of
    :data:`CHECKED_PACKAGES` that distributed reports: all but ``dask_gateway``)."""
    workers = {}
    for address, ws in dask_scheduler.workers.items():
        reported = dict(((getattr(ws, "versions", None) or {}).get("packages")) or {})
        if "python" in reported:
            reported["python"] = _release(reported["python"])
        workers[address] = {k: reported[k] for k in CHECKED_PACKAGES if k in reported}
    return {"scheduler": package_versions(), "workers": workers}
