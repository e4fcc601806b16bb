"""This server's view of its user's Dask clusters: models, actions and the token sync.

:class:`DaskService` is shared by the REST routes (``dask_handlers.py``, in the server) and the
notebook widget (``dask_widget.py``, in a kernel). Its methods block (the dask-gateway client
runs its own event loop): the server calls them in a thread. It talks to the gateway as this
server (its ``JUPYTERHUB_API_TOKEN``), so it sees and changes only this user's clusters.
:func:`form_model` (pure) builds the sidebar's new-cluster form; the environments it offers come
from the caller (the route asks kernel discovery). No jupyter_server imports here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping

from . import contract
from . import dask_client as api
from .dask_options import ENVIRONMENT, Field, Limits, own_environment
from .token import token_digest

# a cluster name in this server's routes (``dask_handlers.py``, ``dask_dashboard.py``)
CLUSTER_NAME = r"([A-Za-z0-9._-]{1,128})"

# the form's label of the ``environment`` select and of its "" choice (no own environment)
ENVIRONMENT_LABEL = "Environment"
IMAGE_CHOICE = "The facility's image"


def environment_choices(
    environments: Iterable[Mapping], home: str | None
) -> tuple[tuple[str, str], ...]:
    """The form's ``environment`` choices: ``""`` (the image) and each discovered environment
    with a Python that is the user's own (inside ``home``: ``dask_options.own_environment``),
    labelled ``name (prefix)``, in the order given, each prefix once."""
    out = {"": IMAGE_CHOICE}
    for env in environments:
        prefix = own_environment(env.get("prefix") or "", home)
        if prefix and env.get("python") and prefix not in out:
            out[prefix] = f"{env.get('name') or prefix} ({prefix})"
    return tuple(out.items())


def form_model(
    fields: list[Field],
    limits: Limits,
    *,
    defaults: Mapping,
    environments: Iterable[Mapping] = (),
    home: str | None = None,
) -> dict:
    """``GET afhub/api/dask/options``: the gateway's ``fields`` with the facility ``defaults``;
    the ``environment`` path becomes a select of the user's own environments (POST create still
    checks whatever arrives as the gateway's path field, and the gateway decides)."""
    models = []
    for f in fields:
        if f.name == ENVIRONMENT:
            choices = environment_choices(environments, home)
            default = defaults.get(f.name, f.default)
            f = Field(
                f.name,
                ENVIRONMENT_LABEL,
                "select",
                default if default in dict(choices) else "",
                choices=choices,
            )
        elif f.type == "path":  # no other path option is offered in the form
            continue
        m = f.model()
        if f.name in defaults and f.name != ENVIRONMENT:
            m["default"] = defaults[f.name]
        models.append(m)
    return {"fields": models, "limits": limits.model()}


class DaskService:
    """This server's view of its user's clusters (blocking methods: run them in a thread)."""

    def __init__(self, log=None, *, interval: float = 2.0, list_every: float = 5.0):
        self.log = log or logging.getLogger("afhub.dask")
        self.interval = interval
        self.list_every = list_every
        self._gateway = None
        self._lock = threading.RLock()
        self._connected: dict[str, object] = {}  # name -> GatewayCluster (not shut on close)
        self._pushed: dict[str, str] = {}  # name -> digest of the token on its workers
        self._requested: dict[str, dict] = {}  # name -> {"requested": n} / {"adapt": {...}}
        self._task: asyncio.Task | None = None
        self._token_stat = None

    @property
    def gateway(self):
        with self._lock:
            if self._gateway is None:
                self._gateway = api.gateway()
            return self._gateway

    # -- models --------------------------------------------------------------------------
    def _cluster(self, name: str):
        with self._lock:
            cluster = self._connected.get(name)
            if cluster is None:
                cluster = self.gateway.connect(name)
                self._connected[name] = cluster
            return cluster

    def model(self, report) -> dict:
        status = report.status.name.lower()
        workers = 0
        if status == "running":
            try:
                info = self._cluster(report.name).scheduler_info
                workers = len(info.get("workers", {}))
            except Exception:
                workers = 0
        extra = self._requested.get(report.name, {})
        return {
            "name": report.name,
            "status": status,
            "workers": workers,
            "requested": extra.get("requested", workers),
            "adapt": extra.get("adapt"),
            "dashboard_link": report.dashboard_link,
            "options": dict(report.options or {}),
            "start_time": report.start_time.timestamp() if report.start_time else None,
        }

    def list_models(self) -> list[dict]:
        return [self.model(r) for r in self.gateway.list_clusters()]

    def get_model(self, name: str) -> dict:
        return self.model(self.gateway.get_cluster(name))

    def options_model(self, environments: Iterable[Mapping] = ()) -> dict:
        """The sidebar form's model; ``environments``: the environments kernel discovery found
        (``GET afhub/api/environments`` entries: ``name``, ``prefix``, ``python``)."""
        return form_model(
            api.options(self.gateway),
            api.limits(self.gateway),
            defaults=api.facility_defaults(),
            environments=environments,
            home=os.environ.get("HOME"),
        )

    # -- actions -------------------------------------------------------------------------
    def create(self, body: dict) -> dict:
        requested = body.get("options") or {}
        if not isinstance(requested, dict):
            raise api.DaskOptionError("options", "must be a mapping of option names to values")
        fields = api.options(self.gateway)
        chosen = api.resolve_options(fields, requested, api.facility_defaults())
        limits = api.limits(self.gateway)
        workers = body.get("workers")
        adapt = body.get("adapt")
        if workers is not None:
            api.check_workers(workers, limits)
        if adapt is not None:
            adapt = self._check_adapt(adapt, limits)
        name = self.gateway.submit(**chosen)
        report = self.gateway.get_cluster(name)  # raises if it failed to start
        self._push(name)
        if adapt is not None:
            self.adapt(name, adapt)
        elif workers:
            self.scale(name, {"workers": workers})
        return self.model(self.gateway.get_cluster(name) if workers or adapt else report)

    def _check_adapt(self, body, limits) -> dict:
        if not isinstance(body, dict):
            raise api.DaskOptionError("adapt", "must be {minimum: n, maximum: n}")
        lo = api.check_workers(body.get("minimum", 0), limits, "minimum")
        hi = api.check_workers(body.get("maximum", limits.max_workers), limits, "maximum")
        if lo > hi:
            raise api.DaskOptionError("minimum", f"{lo} is above maximum {hi}")
        return {"minimum": lo, "maximum": hi}

    def scale(self, name: str, body: dict) -> dict:
        self.gateway.get_cluster(name)  # 404 before anything else
        n = api.check_workers(body.get("workers"), api.limits(self.gateway))
        self.gateway.scale_cluster(name, n)
        self._requested[name] = {"requested": n}
        return self.get_model(name)

    def adapt(self, name: str, body: dict) -> dict:
        self.gateway.get_cluster(name)
        bounds = self._check_adapt(body, api.limits(self.gateway))
        self.gateway.adapt_cluster(name, **bounds)
        self._requested[name] = {"adapt": bounds}
        return self.get_model(name)

    def stop(self, name: str) -> None:
        self.gateway.get_cluster(name)
        self.gateway.stop_cluster(name)
        self._forget(name)

    def _forget(self, name: str) -> None:
        with self._lock:
            cluster = self._connected.pop(name, None)
        self._pushed.pop(name, None)
        self._requested.pop(name, None)
        if cluster is not None:
            try:
                cluster.close(shutdown=False)
            except Exception:
                pass

    # -- the token on workers -------------------------------------------------------------
    def _push(self, name: str, token: str | None = None) -> None:
        token = token or api.read_token()
        if not token:
            return
        digest = token_digest(token)
        if self._pushed.get(name) == digest:
            return
        client = self._cluster(name).get_client(set_as_default=False)
        try:
            api.push_token(client, token)
        finally:
            client.close()
        self._pushed[name] = digest
        self.log.info("afhub: data-access token %s sent to the workers of cluster %s", digest, name)

    def sync_once(self, list_clusters: bool) -> None:
        token = api.read_token()
        if not token:
            return
        digest = token_digest(token)
        if list_clusters or any(d != digest for d in self._pushed.values()):
            active = self.active_clusters()
            for name in list(self._pushed) + list(self._connected):
                if name not in active:
                    self._forget(name)
            for name in sorted(n for n, status in active.items() if status == "RUNNING"):
                try:
                    self._push(name, token)
                except Exception as e:
                    self.log.warning("afhub: token not sent to cluster %s yet: %s", name, e)

    def active_clusters(self) -> dict[str, str]:
        """``{name: status}`` of this user's pending and running clusters (``RUNNING``, ...).

        One plain request to the gateway's REST API (what ``Gateway.list_clusters`` asks) when
        the hub configured the gateway through the environment with JupyterHub auth, as afhub's
        hub does: the server imports dask, distributed and dask_gateway (0.9 s of CPU) only once
        its user has a running cluster, not at every start (20 servers starting at once on 2
        cores paid it as 5 s more to JupyterLab, bench/spawn_storm.py). Else the client's list.
        """
        env = os.environ
        address = env.get(contract.DASK_GATEWAY_ADDRESS)
        token = env.get("JUPYTERHUB_API_TOKEN")
        if address and token and env.get(contract.DASK_GATEWAY_AUTH, "").lower() == "jupyterhub":
            import requests

            r = requests.get(
                f"{address.rstrip('/')}/api/v1/clusters/",
                headers={"Authorization": f"jupyterhub {token}"},
                timeout=30,
            )
            r.raise_for_status()
            return {name: str(m.get("status", "")).upper() for name, m in r.json().items()}
        return {r.name: r.status.name for r in self.gateway.list_clusters()}

    def _token_changed(self) -> bool:
        path = os.environ.get(contract.TOKEN_FILE)
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        key = (st.st_mtime_ns, st.st_ino, st.st_size) if st else None
        changed = key != self._token_stat
        self._token_stat = key
        return changed

    async def run(self) -> None:
        last_list = 0.0
        while True:
            try:
                now = time.monotonic()
                changed = self._token_changed()
                due = now - last_list >= self.list_every
                if changed or due:
                    await asyncio.to_thread(self.sync_once, due or changed)
                    last_list = now
            except asyncio.CancelledError:
                raise
            except Exception as e:  # gateway restarting, hub down: try again
                self.log.warning("afhub: Dask token sync: %s", e)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None and os.environ.get(contract.TOKEN_FILE):
            self._task = asyncio.ensure_future(self.run())
