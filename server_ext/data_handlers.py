"""REST routes of the storage the data-access token is for, under ``{base_url}afhub/api/data``.

- ``GET  afhub/api/data``       the configured endpoints (from the hub's contract), the
  audience the storage accepts and the file "test access" opens; ``enabled: false`` where the
  hub configured no storage;
- ``POST afhub/api/data/test``  body ``{"endpoint": "cache"|"origin", "path": optional}``:
  open a small file there with the current token, in a fresh process (a new login with the
  token now in the file), and report ``ok``, ``reason`` and ``message``
  (``data_access.diagnose``) plus the client's ``server_message``. 400 for an unknown endpoint
  or a bad path, 409 without storage.

The probe's environment is this server's (``BEARER_TOKEN_FILE``, CA trust) with short XRootD
timeouts; the token goes nowhere else and no answer carries it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join

from . import contract, data_access
from .handlers import AfhubAPIHandler
from .token import read_token_file


def data_model(environ) -> dict:
    endpoints = contract.data_endpoints(environ)
    return {
        "enabled": bool(endpoints),
        "endpoints": [{"name": n, "url": u} for n, u in endpoints.items()],
        "audience": environ.get(contract.DATA_AUDIENCE),
        "test_path": data_access.default_test_path(environ.get(contract.DATA_SAMPLES)),
    }


async def run_probe(url: str, environ) -> dict | None:
    """The probe's JSON answer, or None when it gave none within ``PROBE_TIMEOUT``."""
    env = {**environ, **data_access.PROBE_ENVIRONMENT}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        data_access.PROBE,
        url,
        str(data_access.READ_BYTES),
        str(int(env["XRD_REQUESTTIMEOUT"])),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), data_access.PROBE_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except ValueError:
        return None


def read_token(environ) -> str | None:
    return read_token_file(environ.get(contract.TOKEN_FILE))


class DataHandler(AfhubAPIHandler):
    auth_resource = "server"

    @tornado.web.authenticated
    @authorized
    async def get(self):
        self.set_header("Cache-Control", "no-store")
        self.write_json(data_model(os.environ))


class DataTestHandler(AfhubAPIHandler):
    auth_resource = "server"

    @tornado.web.authenticated
    @authorized
    async def post(self):
        self.set_header("Cache-Control", "no-store")
        environ = dict(os.environ)
        model = data_model(environ)
        if not model["enabled"]:
            self.json_error(409, "no storage is configured for this server")
            return
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.json_error(400, "the body must be a JSON object")
            return
        endpoints = {e["name"]: e["url"] for e in model["endpoints"]}
        name = body.get("endpoint")
        if name not in endpoints:
            known = ", ".join(endpoints)
            self.json_error(400, f"endpoint: unknown endpoint {name!r}; endpoints: {known}")
            return
        path = body.get("path") or model["test_path"]
        problem = data_access.test_path_problem(path)
        if problem:
            self.json_error(400, f"path: {problem}")
            return
        url = f"{endpoints[name]}//{path.lstrip('/')}"
        started = time.monotonic()
        probe = await run_probe(url, environ)
        token = read_token(environ)
        reason, message = data_access.diagnose(
            probe,
            claims=data_access.token_claims(token),
            has_token=token is not None,
            audience=model["audience"],
            path=path,
            now=time.time(),
        )
        del token
        self.write_json(
            {
                "endpoint": name,
                "url": url,
                "path": path,
                "ok": reason == "ok",
                "reason": reason,
                "message": message,
                "server_message": (probe or {}).get("message") or "",
                "seconds": round(time.monotonic() - started, 3),
                "checked_at": time.time(),
            }
        )


def setup_data_handlers(web_app) -> None:
    base = url_path_join(web_app.settings["base_url"], "afhub", "api", "data")
    web_app.add_handlers(
        ".*$", [(base, DataHandler), (url_path_join(base, "test"), DataTestHandler)]
    )
