"""The notebook API's functions over Dask Gateway (``afhub.server_ext.dask`` re-exports them).

What lives here: the gateway client with this facility's settings, the options and limits the
gateway offers you (checked with the shared definitions, ``dask_options.py``), facility
defaults, version checks, putting the data-access token on workers, ``new_cluster``,
``clusters``, ``connect``. Below the views: ``dask_service.py`` (REST and widget) and
``dask_widget.py`` import this module, never ``dask.py``, which imports them (the public API).
What must not: anything hub-side, jupyter_server, ipywidgets.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

from afhub.server_ext import contract
from afhub.server_ext.dask_options import (
    DEFAULTS,
    ENVIRONMENT,
    LIMIT_KEYS,
    DaskOptionError,
    Field,
    Limits,
    check_options,
    check_workers,
    option_fields,
    own_environment,
)
from afhub.server_ext.token import read_token_file

from .dask_versions import (  # noqa: E402  (re-exported)
    CHECKED_PACKAGES,
    cluster_package_versions,
    package_versions,
)


class DaskNotEnabled(RuntimeError):
    """This hub runs no Dask Gateway (``dask.enabled`` is false in its values)."""


class DaskVersionWarning(UserWarning):
    """Scheduler or worker package versions differ from the notebook's."""


def gateway(**kw):
    """A ``dask_gateway.Gateway`` for this facility (its settings come from the hub).

    First makes the stock client safe to close on its own loop thread in this process
    (``dask_gateway_compat``): the user server's token sync (``dask_service.py``) drops the
    clients of clusters that stopped, and a collector run on distributed's shared loop thread
    would otherwise deadlock that loop for good (no token reaches a later cluster, whose
    workers then wait out the scheduler's token gate; the sidebar's Dask calls hang).

    Also runs dask-awkward graphs computed in this process one task per chunk
    (``dask_fuse``; ``afhub.fuse-chunks: false`` in dask's config switches it off)."""
    import dask

    from . import dask_fuse, dask_gateway_compat

    dask_gateway_compat.install()
    dask_fuse.install()
    from dask_gateway import Gateway

    if not dask.config.get("gateway.address", None):
        raise DaskNotEnabled(
            "this hub runs no Dask Gateway (ask the facility admins to enable dask in its values)"
        )
    return Gateway(**kw)


def _units() -> dict[str, str]:
    """Units of afhub's option fields (their one definition, ``dask_options``), which the
    gateway's specification does not carry."""
    lim = Limits(**{k: max(DEFAULTS[k], 1) for k in LIMIT_KEYS})
    return {f.name: f.unit for f in option_fields({}, lim) if f.unit}


def fields_from_spec(spec: list[dict]) -> list[Field]:
    """The gateway's ``/api/v1/options`` specification as :class:`Field` s, with the units of
    afhub's fields (worker memory in GiB)."""
    units = _units()
    out = []
    for s in spec:
        t = s["spec"]
        kind = {"float": "float", "int": "int", "select": "select", "string": "path"}.get(t["type"])
        if kind is None:
            continue
        if kind == "select":
            choices = tuple((o, o) for o in t.get("options", []))
            out.append(
                Field(s["field"], s.get("label") or s["field"], kind, s["default"], choices=choices)
            )
        elif kind == "path":
            out.append(Field(s["field"], s.get("label") or s["field"], kind, s["default"]))
        else:
            out.append(
                Field(
                    s["field"],
                    s.get("label") or s["field"],
                    kind,
                    s["default"],
                    t.get("min"),
                    t.get("max"),
                    unit=units.get(s["field"], ""),
                )
            )
    return out


async def _get_json(gw, path: str) -> Any:
    resp = await gw._request("GET", gw.address + path)
    return await resp.json()


def options(gw=None) -> list[Field]:
    """The options the gateway offers you, with your limits applied."""
    gw = gw or gateway()
    return fields_from_spec(gw.sync(_get_json, gw, "/api/v1/options")["cluster_options"])


def limits(gw=None) -> Limits:
    gw = gw or gateway()
    return Limits(**gw.sync(_get_json, gw, "/api/v1/afhub/limits"))


def facility_defaults() -> dict:
    """Option defaults from the hub (``DASK_GATEWAY__CLUSTER__OPTIONS__*``: the image of the
    running profile)."""
    import dask

    return dict(dask.config.get("gateway.cluster.options", {}) or {})


def resolve_options(fields: list[Field], requested: Mapping, defaults: Mapping) -> dict:
    """``requested`` over the facility ``defaults`` (only those the gateway offers), checked."""
    names = {f.name for f in fields}
    merged = {k: v for k, v in defaults.items() if k in names}
    merged.update(requested)
    return check_options(fields, merged)


def version_mismatches(versions: Mapping) -> list[str]:
    """``["distributed: notebook 2026.8.0, scheduler 2026.7.0", ...]`` from
    ``Client.get_versions()``; empty when everything matches."""
    client = (versions.get("client") or {}).get("packages", {})
    out = []
    others = [("scheduler", (versions.get("scheduler") or {}).get("packages", {}))]
    for name, w in sorted((versions.get("workers") or {}).items()):
        others.append((f"worker {name}", (w or {}).get("packages", {})))
    for pkg in CHECKED_PACKAGES:
        mine = client.get(pkg)
        for where, pkgs in others:
            theirs = pkgs.get(pkg)
            if pkg in pkgs and theirs != mine:
                out.append(f"{pkg}: notebook {mine}, {where} {theirs}")
    return out


def cluster_versions(client) -> dict:
    """``Client.get_versions``-shaped versions of this kernel, the scheduler and the workers
    (one round trip, to the scheduler: see :func:`cluster_package_versions`)."""
    remote = client.run_on_scheduler(cluster_package_versions)
    return {
        "client": {"packages": package_versions()},
        "scheduler": {"packages": remote["scheduler"]},
        "workers": {w: {"packages": v} for w, v in remote["workers"].items()},
    }


def warn_on_version_mismatch(client) -> list[str]:
    problems = version_mismatches(cluster_versions(client))
    if problems:
        warnings.warn(
            "the cluster runs other package versions than this notebook: "
            + "; ".join(problems[:6])
            + (" ..." if len(problems) > 6 else ""),
            DaskVersionWarning,
            stacklevel=3,
        )
    return problems


def read_token(path: str | None = None) -> str | None:
    """This server's data-access token (``BEARER_TOKEN_FILE`` unless ``path`` is given)."""
    return read_token_file(path or os.environ.get(contract.TOKEN_FILE))


def push_token(client, token: str | None = None) -> bool:
    """Put this server's data-access token on every current and future worker of ``client``'s
    cluster (a no-op when the server has no token)."""
    from .dask_token import PLUGIN_NAME, BearerTokenPlugin

    token = token or read_token()
    if not token:
        return False
    plugin = BearerTokenPlugin(token, contract.read_data_environment(os.environ))
    client.register_plugin(plugin, name=PLUGIN_NAME)
    return True


def new_cluster(
    workers: int | None = None,
    adapt: tuple[int, int] | Mapping | None = None,
    *,
    check_versions: bool = True,
    shutdown_on_close: bool = False,
    **requested,
):
    """Start a cluster with facility defaults; returns a ``dask_gateway.GatewayCluster``.

    ``workers``: scale to this many workers; ``adapt``: ``(minimum, maximum)`` instead.
    Other keyword arguments are cluster options (``worker_cores``, ``worker_memory`` in GiB,
    ``image``, ``worker_gpus`` where offered, ``environment``); :class:`DaskOptionError` names a
    bad one. From a kernel in your own environment (a venv or conda environment in your home)
    the scheduler and workers run that environment (``environment`` defaults to this kernel's
    ``sys.prefix``; ``environment=""``: the image instead). The gateway refuses another user's
    environment, one that cannot run workers (saying what to install) and backends whose
    workers do not share your home (Kubernetes).
    The cluster outlives this kernel (``shutdown_on_close=False``) but not your server.
    """
    # this Gateway only submits: the cluster gets its own client on the same loop. Closed here,
    # on every path, rather than by the collector on some loop thread (dask_gateway_compat)
    with gateway() as gw:
        fields = options(gw)
        if ENVIRONMENT not in requested and any(f.name == ENVIRONMENT for f in fields):
            mine = own_environment(sys.prefix, os.environ.get("HOME"))
            if mine:
                requested = {**requested, ENVIRONMENT: mine}
        chosen = resolve_options(fields, requested, facility_defaults())
        lim = limits(gw)
        if workers is not None:
            check_workers(workers, lim)
        if adapt is not None:
            lo, hi = (adapt["minimum"], adapt["maximum"]) if isinstance(adapt, Mapping) else adapt
            check_workers(lo, lim, "adapt.minimum")
            check_workers(hi, lim, "adapt.maximum")
            if lo > hi:
                raise DaskOptionError("adapt", f"minimum {lo} is above maximum {hi}")
        cluster = gw.new_cluster(shutdown_on_close=shutdown_on_close, **chosen)
    try:
        # ask for workers first: they start while the token goes to the scheduler, which
        # hands it to each worker as it joins
        if adapt is not None:
            cluster.adapt(minimum=lo, maximum=hi)
        elif workers:
            cluster.scale(workers)
        client = cluster.get_client(set_as_default=False)
        try:
            push_token(client)
            if check_versions:
                if workers and adapt is None:
                    client.wait_for_workers(workers, timeout=300)
                warn_on_version_mismatch(client)
        finally:
            client.close()
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


def clusters(gw=None) -> list:
    """Your pending and running clusters (``dask_gateway.ClusterReport`` s)."""
    if gw is not None:
        return gw.list_clusters()
    with gateway() as own:
        return own.list_clusters()


def connect(name: str | None = None, *, check_versions: bool = True):
    """A running cluster of yours: by ``name``, or your only one."""
    with gateway() as gw:  # the cluster gets its own client (as in new_cluster)
        if name is None:
            running = clusters(gw)
            if not running:
                raise LookupError("you have no running Dask cluster; start one with new_cluster()")
            if len(running) > 1:
                names = ", ".join(c.name for c in running)
                raise LookupError(f"you have {len(running)} clusters; pass one of: {names}")
            name = running[0].name
        try:
            cluster = gw.connect(name)
        except ValueError:
            raise LookupError(f"no running cluster of yours is named {name!r}") from None
    if check_versions:
        warn_on_version_mismatch(cluster.get_client(set_as_default=False))
    return cluster
