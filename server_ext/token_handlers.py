"""REST route of the data-access token, ``{base_url}afhub/api/token``, and its setup.

- ``GET  afhub/api/token``  status without the token: state, expiry, audience, scope, last
  refresh, last error, next attempt, path of the file;
- ``POST afhub/api/token``  renew now (the hub refreshes upstream unless it just did), then
  the status.

``setup_token_handlers(serverapp)`` is called by the extension loader. It exports the resolved
``BEARER_TOKEN_FILE`` to this process (kernels and terminals inherit it), starts the renewer on
the server's event loop and registers the route. Without JupyterHub or without token delivery
configured, the route answers ``state: disabled``.
"""

from __future__ import annotations

import os
import time

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.utils import url_path_join

from . import contract
from .handlers import AfhubAPIHandler
from .token import TokenPathError, TokenStatus
from .token_renewer import TokenRenewer


class TokenStatusHandler(AfhubAPIHandler):
    auth_resource = "server"

    @property
    def renewer(self) -> TokenRenewer | None:
        return self.settings.get("afhub_token_renewer")

    @tornado.web.authenticated
    @authorized
    async def get(self):
        self.set_header("Cache-Control", "no-store")
        if self.renewer is None:
            self.write_json(TokenStatus(state="disabled").model(now=time.time()))
            return
        self.write_json(self.renewer.status.model(now=time.time()))

    @tornado.web.authenticated
    @authorized
    async def post(self):
        self.set_header("Cache-Control", "no-store")
        if self.renewer is None:
            self.json_error(409, "token delivery is not enabled on this server")
            return
        self.write_json(await self.renewer.refresh_now())


def setup_token_handlers(serverapp) -> TokenRenewer | None:
    """Register ``afhub/api/token`` and start renewal if this server gets tokens."""
    web_app = serverapp.web_app
    log = serverapp.log
    try:
        renewer = TokenRenewer.from_environment(logger=log)
    except TokenPathError as e:
        log.error("afhub token renewal disabled: %s", e)
        renewer = None
    if renewer is not None:
        os.environ[contract.TOKEN_FILE] = renewer.status.path
        from tornado.ioloop import IOLoop

        IOLoop.current().add_callback(renewer.start)
        log.info("afhub: data-access token renewal into %s", renewer.status.path)
    web_app.settings["afhub_token_renewer"] = renewer
    route = url_path_join(web_app.settings["base_url"], "afhub", "api", "token")
    web_app.add_handlers(".*$", [(route, TokenStatusHandler)])
    return renewer
