"""Package versions for the notebook API's version check (``DaskVersionWarning``).

:func:`package_versions` runs in the kernel, on the scheduler and on every worker
(``Client.run``), so this module imports the standard library only: importing
``afhub.server_ext.dask`` there would cost seconds per process.
"""

from __future__ import annotations

CHECKED_PACKAGES = ("python", "dask", "distributed", "dask_gateway", "cloudpickle", "msgpack")


def package_versions() -> dict:
    """This process's versions of :data:`CHECKED_PACKAGES`, for the notebook API's version
    check; runs in the kernel, on the scheduler and on the workers."""
    import importlib
    import platform

    out = {"python": platform.python_version()}
    for pkg in CHECKED_PACKAGES[1:]:
        try:  # the module's own __version__: these are already imported in Dask processes
            out[pkg] = str(getattr(importlib.import_module(pkg), "__version__", None))
        except ImportError:
            out[pkg] = None
    return out
