"""Dask from the notebook: ``afhub.server_ext.dask``, the user-side API over Dask Gateway.

In a user server of a facility with ``dask.enabled``, ``dask_gateway.Gateway()`` already works
with no arguments (the hub sets ``DASK_GATEWAY__*``). This module adds the facility defaults and
clear errors on top::

    from afhub.server_ext.dask import new_cluster, connect, clusters
    cluster = new_cluster(workers=2)              # same image/environment as this notebook
    client = cluster.get_client()
    cluster = connect()                           # your running cluster (from another notebook)

- ``new_cluster(workers=None, adapt=None, **options)``: options are checked against the
  options and per-group limits the gateway offers you before anything starts; a bad one raises
  :class:`DaskOptionError` naming the option and the allowed range (the gateway enforces the
  same rules again). The data-access token is put on the workers before this returns.
- ``connect(name=None)``: a running cluster of yours by name, or your only one.
- ``clusters()``: your clusters (created anywhere: notebooks, the sidebar, the widget).
- ``limits()``: your limits (``max_workers``, ``max_clusters``, ...).
Package versions of scheduler and workers that differ from this kernel's give a
:class:`DaskVersionWarning` naming the packages.
"""

from __future__ import annotations

from .dask_client import (  # noqa: F401  (the public API; the rest for routes and tests)
    CHECKED_PACKAGES,
    DEFAULTS,
    LIMIT_KEYS,
    DaskNotEnabled,
    DaskOptionError,
    DaskVersionWarning,
    Field,
    Limits,
    check_options,
    check_workers,
    cluster_package_versions,
    cluster_versions,
    clusters,
    connect,
    facility_defaults,
    fields_from_spec,
    gateway,
    limits,
    new_cluster,
    option_fields,
    options,
    package_versions,
    push_token,
    read_token,
    resolve_options,
    version_mismatches,
    warn_on_version_mismatch,
)

__all__ = [
    "DaskOptionError",
    "DaskNotEnabled",
    "DaskVersionWarning",
    "new_cluster",
    "connect",
    "clusters",
    "limits",
    "options",
    "push_token",
]


def __getattr__(name):  # the widget needs ipywidgets; import it only when asked for
    if name == "ClusterList":
        from .dask_widget import ClusterList

        return ClusterList
    raise AttributeError(name)
