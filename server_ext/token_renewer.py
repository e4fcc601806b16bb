"""The renewal loop: fetch the data-access token from the hub's broker, write it, repeat.

One :class:`TokenRenewer` per server, started by ``token_handlers.setup_token_handlers`` only
when the server runs under JupyterHub (``JUPYTERHUB_API_TOKEN``/``JUPYTERHUB_API_URL``/
``JUPYTERHUB_USER``) with ``BEARER_TOKEN_FILE`` set by the hub. It authenticates to the broker
with the server's own ``JUPYTERHUB_API_TOKEN``, renews ``margin`` seconds before expiry, backs
off on failures, and keeps the last token while it is valid. Logs never contain the token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time

from . import contract
from .token import TokenStatus, renew_delay, resolve_token_path, retry_delay, write_token_file

log = logging.getLogger("afhub.token")

# why renewal fails when the hub cannot reach the provider (the sidebar shows it)
UNAVAILABLE = "identity provider unavailable"


def broker_failure(code: int, body: dict) -> tuple[str, str]:
    """``(state, error)`` for a broker answer without a token: the status the sidebar shows,
    naming why (the broker's ``reason``: ``login_required``, ``unavailable``...)."""
    if code == 401:
        return "login_required", str(body.get("message") or "login required")[:300]
    message = str(body.get("message") or f"HTTP {code}")
    if body.get("reason") == "unavailable":
        return "refresh_failing", f"{UNAVAILABLE}: {message}"[:300]
    return "refresh_failing", f"broker: {message}"[:300]


class TokenRenewer:
    def __init__(
        self,
        *,
        broker_url: str,
        api_token: str,
        path: str,
        margin: float = contract.DEFAULT_REFRESH_MARGIN,
        timeout: float = 20,
        clock=time.time,
        logger: logging.Logger | None = None,
    ):
        self.broker_url = broker_url
        self._api_token = api_token
        self.margin = margin
        self.timeout = timeout
        self.clock = clock
        self.log = logger or log
        self.status = TokenStatus(path=path)
        self._token_written: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_environment(cls, environ=None, **kw) -> TokenRenewer | None:
        """A renewer for this server, or None when token delivery is not configured."""
        env = os.environ if environ is None else environ
        needed = ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "JUPYTERHUB_USER")
        settings = contract.read_token_settings(env)
        if settings is None or not all(env.get(k) for k in needed):
            return None
        path = resolve_token_path(
            settings.path_template,
            uid=os.getuid(),
            home=env.get("HOME") or os.path.expanduser("~"),
            environ=dict(env),
        )
        return cls(
            broker_url=contract.broker_url(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_USER"]),
            api_token=env["JUPYTERHUB_API_TOKEN"],
            path=path,
            margin=settings.margin,
            **kw,
        )

    # -- one renewal
    async def _call_broker(self, force: bool) -> tuple[int, dict]:
        from tornado.httpclient import AsyncHTTPClient, HTTPRequest

        req = HTTPRequest(
            self.broker_url,
            method="POST" if force else "GET",
            body=b"" if force else None,
            headers={"Authorization": f"token {self._api_token}", "Accept": "application/json"},
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
        )
        resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        if resp.code == 599:
            raise ConnectionError(f"hub unreachable: {resp.error}")
        try:
            body = json.loads(resp.body or b"{}")
        except ValueError:
            body = {"message": f"non-JSON answer (HTTP {resp.code})"}
        return resp.code, body if isinstance(body, dict) else {}

    async def renew_once(self, force: bool = False) -> bool:
        """Fetch and write the token once; update the status. True if a token valid beyond
        the margin is on disk afterwards."""
        async with self._lock:
            st = self.status
            st.last_attempt = self.clock()
            try:
                code, body = await self._call_broker(force)
            except Exception as e:
                return self._failed("refresh_failing", f"{type(e).__name__}: {e}"[:300])
            if code != 200 or "access_token" not in body:
                return self._failed(*broker_failure(code, body))
            token = body["access_token"]
            now = self.clock()
            expires_at = now + float(body.get("expires_in") or 0)
            try:
                if token != self._token_written:
                    write_token_file(st.path, token)
                    self._token_written = token
                    st.renewals += 1
                    st.last_refresh = now
            except OSError as e:
                return self._failed(
                    "refresh_failing", f"cannot write {st.path}: {e.strerror or e}"[:300]
                )
            st.expires_at = expires_at
            st.lifetime = body.get("lifetime")
            st.audience = body.get("audience")
            st.scope = body.get("scope")
            if body.get("refresh_error"):
                # the hub could not refresh upstream; this is the old token, still valid
                return self._failed(
                    "refresh_failing", f"{UNAVAILABLE}: {body['refresh_error']}"[:300]
                )
            st.state = "ok"
            st.last_error = None
            st.failures = 0
            self.log.info("Data-access token renewed; expires in %ds", int(expires_at - now))
            return True

    def _failed(self, state: str, error: str) -> bool:
        st = self.status
        st.state = state
        st.last_error = error
        st.failures += 1
        self.log.warning("Data-access token renewal failed (%s): %s", state, error)
        return False

    def next_delay(self) -> float:
        st = self.status
        now = self.clock()
        if st.state == "ok" and st.expires_at:
            return renew_delay(
                expires_in=st.expires_at - now, lifetime=st.lifetime, margin=self.margin
            )
        delay = retry_delay(st.failures, lifetime=st.lifetime)
        if st.state == "login_required":
            delay = max(delay, min(30.0, (st.lifetime or 120) / 2))
        return delay

    # -- the loop
    async def run(self) -> None:
        renew = True
        while True:
            if renew:
                try:
                    await self.renew_once()
                except asyncio.CancelledError:
                    raise
                except Exception:  # never let the loop die; the status shows the last error
                    self.log.exception("Unexpected error in token renewal")
            delay = self.next_delay()
            self.status.next_attempt = self.clock() + delay
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
                renew = False  # woken by refresh_now, which has just renewed: reschedule only
            except asyncio.TimeoutError:
                renew = True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def refresh_now(self) -> dict:
        """The refresh action: force a renewal now, then let the loop reschedule."""
        await self.renew_once(force=True)
        self._wake.set()
        return self.status.model(now=self.clock())
