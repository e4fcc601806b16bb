"""Dask in the user's server: REST routes for the sidebar and the token sync to workers.

Routes under ``{base_url}afhub/api/dask/`` (JSON; errors ``{"message": ...}`` as in
``handlers.py``; 400 names the option and its allowed range, 404 unknown cluster, 409 Dask not
enabled on this hub, 502 gateway unreachable):

- ``GET    clusters``                 ``{"enabled", "clusters": [model]}``
- ``POST   clusters``                 body ``{"options", "workers"?, "adapt"?}`` -> 201 model
- ``GET    options``                  ``{"fields": [...], "limits": {...}}``; its ``environment``
  select offers the user's own environments that kernel discovery lists (inside ``$HOME``)
- ``GET    clusters/<name>``          model
- ``POST   clusters/<name>/scale``    body ``{"workers": n}`` -> model
- ``POST   clusters/<name>/adapt``    body ``{"minimum": a, "maximum": b}`` -> model
- ``DELETE clusters/<name>``          204

Everything goes through the gateway as this server (its own API token): another user's
cluster is invisible here, the gateway answers 404 for it. :class:`DaskService` also keeps the
data-access token on the workers of every running cluster of this user: when the token file
changes (each renewal) and when a cluster appears (made anywhere: notebook, widget, sidebar),
it registers :class:`~.dask_token.BearerTokenPlugin` on it (``dask_service.py``).
The clusters' dashboards are relayed for this user only by ``dask_dashboard.py``
(``{base_url}afhub/dask/clusters/<name>/...``).
"""

from __future__ import annotations

import asyncio
import os

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join

from . import contract
from . import dask_client as api
from .dask_service import CLUSTER_NAME, DaskService
from .handlers import AfhubAPIHandler


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
        await self.call(self._options if self.service else None)

    def _options(self) -> dict:
        """The form, offering the environments ``GET afhub/api/environments`` lists (in a
        thread: kernel discovery stats the environments' directories)."""
        ksm = self.kernel_spec_manager
        found = ksm.environments()["environments"] if hasattr(ksm, "environments") else []
        return self.service.options_model(found)


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
        from .dask_dashboard import setup_dashboard_handlers

        setup_dashboard_handlers(serverapp)
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
