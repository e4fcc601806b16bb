"""The token broker's state: refresh, exchange and revoke for the users of one hub.

:class:`TokenBroker` holds the in-flight refreshes, recent failures and exchanged tokens of one
hub; it is used by the authenticator's refresh hook (tokens and userinfo, ``oidc.py``) and by
the hub API handler (``handlers.py``). Pure rules live in ``tokens.py``, HTTP in
``provider.py``, merging in ``singleflight.py``.

The refresh token and the id token never leave this module except into the user's encrypted
auth_state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import metrics
from .provider import get_userinfo, post_form, post_revocation
from .singleflight import SingleFlight
from .tokens import (
    ExchangeFailed,
    LoginRequired,
    ProviderUnavailable,
    TokenError,
    delivered_token,
    exchange_params,
    expiry_from_response,
    merge_refreshed_state,
    needs_refresh,
    user_scope,
)

log = logging.getLogger("afhub.tokens")


@dataclass
class _Failure:
    at: float
    error: TokenError


# auth_state keys a token delivery reads (see ``read_state``)
DELIVERY_KEYS = ("access_token", "expires_at", "lifetime", "scope", "refreshed_at")


class TokenBroker:
    """Refresh, exchange and revoke for the users of one hub. Holds no secrets itself except
    exchanged tokens (in memory, until they expire or the user logs out)."""

    def __init__(self, authenticator, *, clock: Callable[[], float] = time.time):
        self.auth = authenticator
        self.clock = clock
        self._flight = SingleFlight()
        self._failures: dict[str, _Failure] = {}
        self._exchanged: dict[str, dict] = {}
        self._states: dict[str, tuple[bytes, dict]] = {}

    # -- configuration read from the authenticator's traits
    @property
    def margin(self) -> float:
        return self.auth.token_refresh_margin

    def _headers(self) -> dict:
        return self.auth.build_token_info_request_headers()

    async def _post(self, url: str, params: dict, label: str) -> dict:
        return await post_form(
            self.auth.http_client,
            url,
            params,
            headers=self._headers(),
            timeout=self.auth.upstream_timeout,
            label=label,
            validate_cert=self.auth.validate_server_cert,
        )

    # -- refresh
    @staticmethod
    def check_state(state: dict | None) -> dict:
        if not state:
            raise LoginRequired("no login state: log in to the hub")
        if state.get("login_required"):
            raise LoginRequired(state["login_required"])
        if not state.get("access_token"):
            raise LoginRequired("no access token: log in to the hub")
        return state

    async def read_state(self, user) -> dict:
        """What a delivery needs from the user's auth_state, decrypted once per change.

        The encrypted blob in the user's row is the cache key: a refresh, a new login and a
        logout all rewrite it, so they invalidate the entry by themselves. The cached view
        holds the access token and its expiry, never the refresh or id token.
        """
        blob = user.encrypted_auth_state
        cached = self._states.get(user.name)
        if blob is not None and cached is not None and cached[0] == blob:
            return cached[1]
        state = self.check_state(await user.get_auth_state())
        view = {k: state[k] for k in DELIVERY_KEYS if k in state}
        token_type = (state.get("token_response") or {}).get("token_type")
        if token_type:
            view["token_response"] = {"token_type": token_type}
        if blob is not None:
            self._states[user.name] = (blob, view)
        return view

    async def fresh_state(
        self, user, *, force: bool = False, full: bool = False
    ) -> tuple[dict, str | None]:
        """``(auth_state, refresh_error)`` with an access token valid beyond the margin if the
        provider allows. When the provider is down and the current token is still valid, it is
        returned with ``refresh_error`` set; when it has expired, :class:`TokenError` is raised.

        Without ``full`` a fresh token comes from :meth:`read_state`'s delivery view; ``full``
        returns the whole auth_state (for callers that store it back)."""
        now = self.clock()
        if full:
            state = self.check_state(await user.get_auth_state())
        else:
            state = await self.read_state(user)
        if not force and not needs_refresh(state, now=now, margin=self.margin):
            return state, None
        try:
            state = await self._flight.run(user.name, lambda: self._refresh(user, force=force))
            return state, None
        except ProviderUnavailable as e:
            if state.get("expires_at", 0) > self.clock():
                return state, str(e)
            raise

    async def _refresh(self, user, *, force: bool) -> dict:
        now = self.clock()
        state = self.check_state(await user.get_auth_state())
        if not needs_refresh(state, now=now, margin=self.margin):
            lifetime = state.get("lifetime") or float("inf")
            interval = min(self.auth.min_refresh_interval, lifetime / 4)
            recent = now - state.get("refreshed_at", 0) < interval
            if not force or recent:
                return state  # someone refreshed it meanwhile, or a forced refresh just ran
        failure = self._failures.get(user.name)
        if failure and now - failure.at < self.auth.retry_interval:
            raise failure.error
        refresh_token = state.get("refresh_token")
        if not refresh_token:
            raise LoginRequired("no refresh token: log in to the hub")
        metrics.TOKEN_REFRESH.inc()
        params = self.auth.build_refresh_token_request_params(refresh_token)
        try:
            token_info = await self._post(self.auth.token_url, params, "token refresh")
        except TokenError as e:
            metrics.TOKEN_REFRESH_FAILURES.labels(e.reason).inc()
            if isinstance(e, LoginRequired):
                state = dict(state, login_required=f"refresh refused, log in again ({e})")
                state["refresh_token"] = None
                await user.save_auth_state(state)
                self._failures.pop(user.name, None)
            else:
                self._failures[user.name] = _Failure(self.clock(), e)
            log.warning("Token refresh for %s failed: %s", user.name, e)
            raise
        self._failures.pop(user.name, None)
        self._exchanged.pop(user.name, None)
        new_state = merge_refreshed_state(state, token_info, now=self.clock())
        await user.save_auth_state(new_state)
        log.info("Refreshed data-access token for %s", user.name)
        return new_state

    # -- userinfo (the hub's periodic re-check of groups, see ``oidc.py``)
    async def userinfo(self, state: dict) -> dict:
        """The provider's userinfo for the access token in ``state``
        (:class:`TokenRejected` when the token is refused, :class:`ProviderUnavailable`)."""
        from tornado.httputil import url_concat

        token = state["access_token"]
        token_type = (state.get("token_response") or {}).get("token_type") or "Bearer"
        url = url_concat(self.auth.userdata_url, self.auth.userdata_params)
        if self.auth.userdata_token_method == "url":
            url = url_concat(url, {"access_token": token})
        return await get_userinfo(
            self.auth.http_client,
            url,
            headers=self.auth.build_userdata_request_headers(token, token_type),
            timeout=self.auth.upstream_timeout,
            validate_cert=self.auth.validate_server_cert,
        )

    async def settled_state(self, user) -> dict:
        """The stored full auth_state once no refresh of ``user`` is in flight, so a caller
        that stores a state back keeps a refresh token rotated meanwhile."""
        await self._flight.settle(user.name)
        return self.check_state(await user.get_auth_state())

    async def require_login(self, user, reason: str) -> dict:
        """Mark ``user``'s auth_state ``login_required`` (the hub then asks for a login and the
        broker answers 401) until the next login replaces it. Returns the stored state."""
        state = await self.settled_state(user)
        state = dict(state, login_required=reason)
        await user.save_auth_state(state)
        self._exchanged.pop(user.name, None)
        return state

    # -- what the handler serves
    async def token_for(self, user, *, force: bool = False) -> dict:
        state, refresh_error = await self.fresh_state(user, force=force)
        now = self.clock()
        if not self.auth.token_exchange:
            return delivered_token(
                access_token=state["access_token"],
                expires_at=state.get("expires_at") or now,
                now=now,
                lifetime=state.get("lifetime"),
                token_type=(state.get("token_response") or {}).get("token_type", "Bearer"),
                audience=self.auth.token_audience or None,
                scope=user_scope(self.auth.token_scope, user.name)
                or " ".join(state.get("scope") or [])
                or None,
                refresh_error=refresh_error,
            )
        cached = self._exchanged.get(user.name)
        if (
            cached
            and cached["subject"] == state["access_token"]
            and not force
            and not needs_refresh(cached, now=now, margin=self.margin)
        ):
            exchanged = cached
        else:
            subject = state["access_token"]
            exchanged = await self._flight.run(
                "exchange:" + user.name, lambda: self._exchange(user.name, subject)
            )
        return delivered_token(
            access_token=exchanged["access_token"],
            expires_at=exchanged["expires_at"],
            now=now,
            lifetime=exchanged.get("lifetime"),
            token_type=exchanged.get("token_type", "Bearer"),
            audience=self.auth.token_audience or None,
            scope=exchanged.get("scope") or user_scope(self.auth.token_scope, user.name) or None,
            refresh_error=refresh_error,
        )

    async def _exchange(self, name: str, subject: str) -> dict:
        params = exchange_params(
            subject,
            audience=self.auth.token_audience,
            scope=user_scope(self.auth.token_scope, name),
        )
        url = self.auth.exchange_url or self.auth.token_url
        try:
            info = await self._post(url, params, "token exchange")
        except TokenError as e:
            metrics.TOKEN_EXCHANGE.labels("failed").inc()
            if 400 <= getattr(e, "code", 0) < 500:  # the provider refused this exchange
                raise ExchangeFailed(str(e)) from None
            raise
        metrics.TOKEN_EXCHANGE.labels("ok").inc()
        expires_at, lifetime = expiry_from_response(info, now=self.clock())
        entry = {
            "access_token": info["access_token"],
            "token_type": info.get("token_type", "Bearer"),
            "scope": info.get("scope"),
            "expires_at": expires_at,
            "lifetime": lifetime,
            "subject": subject,
        }
        self._exchanged[name] = entry
        return entry

    # -- logout
    async def revoke(self, user) -> None:
        """RFC 7009 revocation of the user's tokens (where configured), then clear auth_state."""
        self._exchanged.pop(user.name, None)
        self._failures.pop(user.name, None)
        state = await user.get_auth_state()
        url = self.auth.revocation_url
        if state and url:
            for hint in ("refresh_token", "access_token"):
                token = state.get(hint)
                if not token:
                    continue
                try:
                    await post_revocation(
                        self.auth.http_client,
                        url,
                        {"token": token, "token_type_hint": hint},
                        headers=self._headers(),
                        timeout=self.auth.upstream_timeout,
                        validate_cert=self.auth.validate_server_cert,
                    )
                    metrics.TOKEN_REVOCATIONS.labels("ok").inc()
                except TokenError as e:
                    metrics.TOKEN_REVOCATIONS.labels("failed").inc()
                    log.warning("Revoking %s of %s at logout failed: %s", hint, user.name, e)
        await user.save_auth_state(None)
        log.info("Cleared login state of %s at logout", user.name)
