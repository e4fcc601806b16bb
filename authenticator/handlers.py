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
        """Is the presented token the API token the hub issued to one of ``user``'s servers
        that is running (or starting) now?

        Recognised by the token's database id, which the spawner keeps in its state
        (``afhub_server_token_id``, so it survives a hub restart), or by the token the running
        spawner holds in memory. Never by the token's note: anyone may write any note on a
        token minted through the REST API, and an admin may mint tokens for any user.
        """
        presented = self.get_auth_token() or ""
        orm_token = self.get_token()
        if not presented or orm_token is None or orm_token.user is None:
            return False
        if orm_token.user.id != user.orm_user.id:
            return False
        for spawner in user.spawners.values():
            if not spawner.active:
                continue
            token_id = getattr(spawner, "afhub_server_token_id", None)
            if token_id is not None and token_id() == orm_token.id:
                return True
            token = getattr(spawner, "api_token", None)
            if token and hmac.compare_digest(token.encode(), presented.encode()):
                return True
        return False

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
