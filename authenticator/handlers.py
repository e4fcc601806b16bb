"""The hub API handler of the token broker: ``/hub/api/afhub/users/{name}/token``.

Authorisation only (scope, own server's token) and the HTTP answer; the tokens themselves come
from the hub's :class:`~.broker.TokenBroker`. Imports JupyterHub, so only the authenticator
(``oidc.py``) imports this module.
"""

from __future__ import annotations

import hmac
import json
import time

from afhub.server_ext.contract import BROKER_ROUTE, TOKEN_SCOPE
from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import has_scope
from jupyterhub.user import User

from . import metrics
from .tokens import TokenError

__all__ = ["BROKER_ROUTE", "TokenBrokerHandler"]


class TokenBrokerHandler(APIHandler):
    """``GET /hub/api/afhub/users/{name}/token``: the data-access token for ``name``.

    ``POST`` forces a refresh (at most once per ``min_refresh_interval``). Answers 403 to
    anything but one of ``name``'s own servers, 401 when ``name`` must log in again,
    503 when the provider is down and the token has expired.
    """

    def _own_server_token(self, user) -> bool:
        presented = self.get_auth_token() or ""
        if not presented:
            return False
        for spawner in user.spawners.values():
            token = getattr(spawner, "api_token", None)
            if token and hmac.compare_digest(token.encode(), presented.encode()):
                return True
        # After a hub restart running spawners hold no api_token in memory; the token's own
        # record names the server it was issued for (User.spawn notes "Server at <url>",
        # the same mark JupyterHub itself uses to tell server tokens apart).
        orm_token = self.get_token()
        if orm_token is None or orm_token.user is None:
            return False
        if orm_token.user.id != user.orm_user.id:
            return False
        servers = {
            f"Server at {sp.server.base_url}"
            for sp in user.spawners.values()
            if sp.server is not None
        }
        return orm_token.note in servers

    async def _serve(self, user_name: str, force: bool) -> None:
        start = time.perf_counter()
        status = 200
        try:
            status = await self._answer(user_name, force)
        finally:
            metrics.TOKEN_BROKER_DURATION.labels(str(status)).observe(time.perf_counter() - start)

    def _fail(self, status: int, reason: str, message: str) -> int:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"status": status, "reason": reason, "message": message}))
        return status

    async def _answer(self, user_name: str, force: bool) -> int:
        current = self.current_user
        scope = f"{TOKEN_SCOPE}!user={user_name}"
        if not isinstance(current, User) or not has_scope(scope, self.parsed_scopes, db=self.db):
            return self._fail(403, "forbidden", f"requires scope {scope}")
        user = self.find_user(user_name)
        if user is None:
            return self._fail(404, "not_found", f"no user {user_name}")
        if not self._own_server_token(user):
            return self._fail(
                403, "forbidden", "only the user's own servers may fetch data-access tokens"
            )
        broker = self.authenticator.token_broker
        try:
            model = await broker.token_for(user, force=force)
        except TokenError as e:
            return self._fail(e.status, e.reason, str(e))
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(model))
        return 200

    async def get(self, user_name):
        await self._serve(user_name, force=False)

    async def post(self, user_name):
        await self._serve(user_name, force=True)
