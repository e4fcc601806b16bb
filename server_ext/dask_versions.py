"""Package versions for the notebook API's version check (``DaskVersionWarning``).

:func:`package_versions` runs in the kernel, on the scheduler and on every worker
(``Client.run``), so this module imports the standard library only: importing
``afhub.server_ext.dask`` there would cost seconds per process. It imports none of the checked
packages either: a package the process has not imported (``dask_gateway`` on a worker: ~0.4 s
under load) is read from its installed metadata.
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
