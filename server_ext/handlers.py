"""REST handlers of the afhub server extension, under `{base_url}afhub/api/`.

What lives here: `AfhubAPIHandler` (the base: JSON bodies, JSON errors without tracebacks) and
the environment routes:

- `GET  afhub/api/environments`             every environment, its kernels, runnable or why not
- `GET  afhub/api/environments/<id>`        one environment
- `POST afhub/api/environments/<id>/kernel` make it runnable (200 already, 202 install started,
  404 unknown id, 409 nothing to run)

and `setup_handlers(web_app)`, which the extension loader calls. Other features (token renewal,
Dask) add their own modules with their own `setup_handlers`; they reuse `AfhubAPIHandler`.
What must not live here: discovery logic (`kernel_discovery.py`).
"""

from __future__ import annotations

import asyncio
import json
import re

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

_ENV_ID = re.compile(r"^[0-9a-f]{12}$")


class AfhubAPIHandler(APIHandler):
    """Base for afhub REST handlers: JSON responses; errors are `{"message": ...}` JSON."""

    def write_json(self, body, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def json_error(self, status: int, message: str) -> None:
        self.write_json({"message": message}, status)


class _EnvHandler(AfhubAPIHandler):
    auth_resource = "kernelspecs"

    @property
    def ksm(self):
        ksm = self.kernel_spec_manager
        return ksm if hasattr(ksm, "environments") else None

    def check_id(self, eid: str) -> bool:
        if not _ENV_ID.match(eid):
            self.json_error(400, f"invalid environment id {eid!r}: expected 12 hex digits")
            return False
        if self.ksm is None:
            self.json_error(404, "environment kernel discovery is not enabled on this server")
            return False
        return True


class EnvironmentsHandler(_EnvHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self):
        if self.ksm is None:
            self.write_json({"enabled": False, "environments": [], "skipped": []})
            return
        self.write_json(await asyncio.to_thread(self.ksm.environments))


class EnvironmentHandler(_EnvHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, eid: str):
        if not self.check_id(eid):
            return
        model = await asyncio.to_thread(self.ksm.environment, eid)
        if model is None:
            self.json_error(404, f"no environment with id {eid!r}")
            return
        self.write_json(model)


class EnvironmentKernelHandler(_EnvHandler):
    @tornado.web.authenticated
    @authorized
    async def post(self, eid: str):
        if not self.check_id(eid):
            return
        await asyncio.to_thread(self.ksm.refresh)
        status, body = self.ksm.make_runnable(eid)
        self.write_json(body, status)


def setup_handlers(web_app) -> None:
    base = url_path_join(web_app.settings["base_url"], "afhub", "api", "environments")
    web_app.add_handlers(
        ".*$",
        [
            (base, EnvironmentsHandler),
            (url_path_join(base, r"([^/]+)"), EnvironmentHandler),
            (url_path_join(base, r"([^/]+)", "kernel"), EnvironmentKernelHandler),
        ],
    )
