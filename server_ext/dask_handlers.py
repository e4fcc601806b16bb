"""Dask in the user's server: REST routes for the sidebar and the token sync to workers.

Routes under ``{base_url}afhub/api/dask/`` (JSON; errors ``{"message": ...}`` as in
``handlers.py``; 400 names the option and its allowed range, 404 unknown cluster, 409 Dask not
enabled on this hub, 502 gateway unreachable):

- ``GET    clusters``                 ``{"enabled", "clusters": [model]}``
- ``POST   clusters``                 body ``{"options", "workers"?, "adapt"?}`` -> 201 model
- ``GET    options``                  ``{"fields": [...], "limits": {...}}``
- ``GET    clusters/<name>``          model
- ``POST   clusters/<name>/scale``    body ``{"workers": n}`` -> model
- ``POST   clusters/<name>/adapt``    body ``{"minimum": a, "maximum": b}`` -> model
- ``DELETE clusters/<name>``          204

Everything goes through the gateway as this server (its own API token): another user's
cluster is invisible here, the gateway answers 404 for it. :class:`DaskService` also keeps the
data-access token on the workers of every running cluster of this user: when the token file
changes (each renewal) and when a cluster appears (made anywhere: notebook, widget, sidebar),
it registers :class:`~.dask_token.BearerTokenPlugin` on it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join

from . import contract
from . import dask as api
from .handlers import AfhubAPIHandler

CLUSTER_NAME = r"([A-Za-z0-9._-]{1,128})"


class GatewayUnavailable(RuntimeError):
    pass


class DaskService:
    """This server's view of its user's clusters (blocking methods: run them in a thread)."""

    def __init__(self, log, *, interval: float = 2.0, list_every: float = 5.0):
        self.log = log
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

    def options_model(self) -> dict:
        fields = api.options(self.gateway)
        defaults = api.facility_defaults()
        models = []
        for f in fields:
            m = f.model()
            if f.name in defaults:
                m["default"] = defaults[f.name]
            models.append(m)
        return {"fields": models, "limits": api.limits(self.gateway).model()}

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
        from .dask_token import token_digest

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
        from .dask_token import token_digest

        digest = token_digest(token)
        if list_clusters or any(d != digest for d in self._pushed.values()):
            reports = self.gateway.list_clusters()
            running = {r.name for r in reports if r.status.name == "RUNNING"}
            for name in list(self._pushed) + list(self._connected):
                if name not in {r.name for r in reports}:
                    self._forget(name)
            for name in sorted(running):
                try:
                    self._push(name, token)
                except Exception as e:
                    self.log.warning("afhub: token not sent to cluster %s yet: %s", name, e)

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


def _error_status(e: Exception) -> tuple[int, str]:
    from dask_gateway.client import GatewayClusterError, GatewayServerError

    if isinstance(e, api.DaskOptionError):
        return 400, str(e)
    if isinstance(e, api.DaskNotEnabled):
        return 409, str(e)
    if isinstance(e, ValueError):  # the gateway's 404/422 (unknown cluster, refused options)
        text = str(e)
        if "not found" in text.lower() or "does not exist" in text.lower():
            return 404, "no cluster of yours by that name"
        return 400, text
    if isinstance(e, (GatewayClusterError, GatewayServerError)):
        return 502, f"Dask Gateway: {e}"
    import aiohttp

    if isinstance(e, aiohttp.ClientResponseError) and e.status in (403, 404):
        return 404, "no cluster of yours by that name"  # another user's: not even its existence
    if isinstance(e, (aiohttp.ClientError, OSError)):
        return 502, "Dask Gateway is unreachable; try again in a moment"
    return 500, f"{type(e).__name__}: {e}"


class DaskHandler(AfhubAPIHandler):
    auth_resource = "server"

    @property
    def service(self) -> DaskService | None:
        return self.settings.get("afhub_dask")

    async def call(self, fn, *args, status: int = 200):
        if self.service is None:
            self.json_error(409, "Dask is not enabled on this hub")
            return
        try:
            result = await asyncio.to_thread(fn, *args)
        except Exception as e:
            code, message = _error_status(e)
            if code == 500:
                self.log.exception("afhub dask route failed")
                message = "internal error; see the server log"
            self.json_error(code, message)
            return
        if status == 204:
            self.set_status(204)
            self.finish()
        else:
            self.write_json(result, status)

    def body(self) -> dict | None:
        try:
            body = self.get_json_body() or {}
        except tornado.web.HTTPError:
            body = None
        if not isinstance(body, dict):
            self.json_error(400, "the request body must be a JSON object")
            return None
        return body


class ClustersHandler(DaskHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self):
        if self.service is None:
            self.write_json({"enabled": False, "clusters": []})
            return
        try:
            clusters = await asyncio.to_thread(self.service.list_models)
        except Exception as e:
            code, message = _error_status(e)
            self.json_error(code, message)
            return
        self.write_json({"enabled": True, "clusters": clusters})

    @tornado.web.authenticated
    @authorized
    async def post(self):
        body = self.body()
        if body is not None:
            await self.call(self.service.create if self.service else None, body, status=201)


class OptionsHandler(DaskHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self):
        await self.call(self.service.options_model if self.service else None)


class ClusterHandler(DaskHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, name):
        await self.call(self.service.get_model if self.service else None, name)

    @tornado.web.authenticated
    @authorized
    async def delete(self, name):
        await self.call(self.service.stop if self.service else None, name, status=204)


class ClusterActionHandler(DaskHandler):
    @tornado.web.authenticated
    @authorized
    async def post(self, name, action):
        body = self.body()
        if body is None:
            return
        fn = None
        if self.service is not None:
            fn = self.service.scale if action == "scale" else self.service.adapt
        await self.call(fn, name, body)


def setup_dask_handlers(serverapp) -> DaskService | None:
    """Register ``afhub/api/dask/...``; start the token sync when this hub runs a gateway."""
    web_app = serverapp.web_app
    service = None
    if contract.read_dask_enabled(os.environ):
        image = os.environ.get(contract.SESSION["image_name"])
        if image:  # the stock client's default image follows this server's profile
            os.environ.setdefault(contract.DASK_DEFAULT_IMAGE, image)
        service = DaskService(serverapp.log)
        from tornado.ioloop import IOLoop

        IOLoop.current().add_callback(service.start)
    web_app.settings["afhub_dask"] = service
    base = url_path_join(web_app.settings["base_url"], "afhub", "api", "dask")
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "clusters"), ClustersHandler),
            (url_path_join(base, "options"), OptionsHandler),
            (url_path_join(base, "clusters", CLUSTER_NAME), ClusterHandler),
            (url_path_join(base, "clusters", CLUSTER_NAME, "(scale|adapt)"), ClusterActionHandler),
        ],
    )
    return service
