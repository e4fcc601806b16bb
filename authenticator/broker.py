"""The token broker: hands a user's own servers a fresh data-access token, nothing more.

What lives here, top to bottom:

- pure functions on token responses and auth_state (expiry, merging a refresh response,
  the delivered model, RFC 8693 exchange parameters, classifying provider errors);
- :class:`SingleFlight`, which merges concurrent calls for one key into one;
- :func:`provider_call`, the one HTTP call to the provider (logs label, status, method and a
  URL without query; never a body or header, which is where tokens live), and its three uses:
  :func:`post_form` (token endpoint), :func:`get_userinfo`, :func:`post_revocation`;
- :class:`TokenBroker`, the per-hub state (in-flight refreshes, recent failures, exchanged
  tokens) used by both the authenticator's refresh hook (tokens and userinfo) and the API
  handler;
- :class:`TokenBrokerHandler`, ``/hub/api/afhub/users/{name}/token``.

The refresh token and the id token never leave this module except into the user's encrypted
auth_state. The handler answers only requests made with the API token of one of the user's own
servers (``JUPYTERHUB_API_TOKEN``) whose scopes include ``custom:afhub-token!user=<name>``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from . import metrics

log = logging.getLogger("afhub.tokens")

TOKEN_SCOPE = "custom:afhub-token"
TOKEN_SCOPE_DESCRIPTION = "Fetch the owner's data-access token from the afhub token broker."
EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
DEFAULT_LIFETIME = 300  # seconds assumed when a provider sends no ``expires_in``
LOGIN_REQUIRED_ERRORS = {"invalid_grant", "invalid_token", "unauthorized_client", "invalid_client"}


# ---------------------------------------------------------------- pure functions


class TokenError(Exception):
    """A token that cannot be delivered; ``status`` is the broker's HTTP answer."""

    status = 503
    reason = "unavailable"
    code = 0  # HTTP status of the provider's answer, when there was one


class LoginRequired(TokenError):
    """No usable refresh token (logged out, revoked, never had one): the user must log in."""

    status = 401
    reason = "login_required"


class ProviderUnavailable(TokenError):
    """The provider could not be reached or answered with a server error."""

    status = 503
    reason = "unavailable"


class ExchangeFailed(TokenError):
    """The provider refused the RFC 8693 exchange for the configured audience/scope."""

    status = 502
    reason = "exchange_failed"


def expiry_from_response(token_info: dict, *, now: float) -> tuple[float, int]:
    """``(expires_at, lifetime)`` of a token response; ``DEFAULT_LIFETIME`` if it gives none."""
    try:
        lifetime = int(token_info.get("expires_in"))
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    return now + lifetime, lifetime


def effective_margin(margin: float, lifetime: float | None) -> float:
    """Renew ``margin`` s before expiry, but never earlier than 2/3 into a short lifetime."""
    if lifetime:
        return min(margin, lifetime / 3)
    return margin


def needs_refresh(state: dict, *, now: float, margin: float) -> bool:
    """True when the access token in ``state`` expires within the (effective) margin."""
    expires_at = state.get("expires_at")
    if not expires_at:
        return True
    return now >= expires_at - effective_margin(margin, state.get("lifetime"))


def merge_refreshed_state(state: dict, token_info: dict, *, now: float) -> dict:
    """The auth_state after a refresh response: new access token and expiry; a rotated refresh
    token replaces the old one, a response without one keeps it; the id token likewise."""
    expires_at, lifetime = expiry_from_response(token_info, now=now)
    merged = dict(state)
    merged["access_token"] = token_info["access_token"]
    merged["refresh_token"] = token_info.get("refresh_token") or state.get("refresh_token")
    merged["id_token"] = token_info.get("id_token") or state.get("id_token")
    if token_info.get("scope"):
        scope = token_info["scope"]
        merged["scope"] = scope.split(" ") if isinstance(scope, str) else list(scope)
    merged["token_response"] = {
        **token_info,
        "refresh_token": merged["refresh_token"],
        "token_type": token_info.get("token_type", "Bearer"),
    }
    merged["expires_at"] = expires_at
    merged["lifetime"] = lifetime
    merged["refreshed_at"] = now
    merged.pop("login_required", None)
    return merged


def delivered_token(
    *,
    access_token: str,
    expires_at: float,
    now: float,
    lifetime: int | None = None,
    token_type: str = "Bearer",
    audience: str | None = None,
    scope: str | None = None,
    refresh_error: str | None = None,
) -> dict:
    """The broker's answer: the one data-access token and facts about it, nothing else."""
    return {
        "access_token": access_token,
        "token_type": token_type,
        "expires_at": expires_at,
        "expires_in": round(max(0.0, expires_at - now), 3),
        "lifetime": lifetime,
        "audience": audience,
        "scope": scope,
        "refresh_error": refresh_error,
    }


def exchange_params(subject_token: str, *, audience: str | None, scope: str | None) -> dict:
    """RFC 8693 section 2.1 request parameters for an access token for ``audience``/``scope``."""
    params = {
        "grant_type": EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": ACCESS_TOKEN_TYPE,
    }
    if audience:
        params["audience"] = audience
    if scope:
        params["scope"] = scope
    return params


def classify_failure(code: int, body: bytes | None, *, label: str) -> TokenError:
    """Turn a failed token-endpoint answer into LoginRequired (grant refused) or
    ProviderUnavailable (anything else). The message names the OAuth error, never a token."""
    error = description = ""
    if body:
        try:
            data = json.loads(body)
            error = str(data.get("error", ""))[:60]
            description = str(data.get("error_description", ""))[:160]
        except (ValueError, AttributeError):
            pass
    detail = f"{label}: HTTP {code}" + (f" {error}" if error else "")
    if description:
        detail += f" ({description})"
    if code in (400, 401) and (error in LOGIN_REQUIRED_ERRORS or not error):
        err: TokenError = LoginRequired(detail)
    else:
        err = ProviderUnavailable(detail)
    err.code = code
    return err


def strip_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


# ---------------------------------------------------------------- merging


class SingleFlight:
    """Run at most one ``factory()`` per key at a time; concurrent callers share its result."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future] = {}

    def pending(self, key: str) -> bool:
        return key in self._inflight

    async def run(self, key: str, factory: Callable[[], Awaitable[Any]]) -> Any:
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(factory())
            self._inflight[key] = fut

            def _done(f, key=key):
                if self._inflight.get(key) is f:
                    del self._inflight[key]
                if not f.cancelled():
                    f.exception()  # retrieved here so a failure nobody awaits is not logged

            fut.add_done_callback(_done)
        return await asyncio.shield(fut)

    async def settle(self, key: str) -> None:
        """Wait until no call for ``key`` is in flight (its outcome is the caller's to read)."""
        while (fut := self._inflight.get(key)) is not None:
            try:
                await asyncio.shield(fut)
            except Exception:
                pass


# ---------------------------------------------------------------- provider I/O


async def provider_call(
    http_client,
    url: str,
    *,
    method: str = "POST",
    params: dict | None = None,
    headers: dict,
    timeout: float,
    label: str,
    validate_cert: bool = True,
    log_failures: bool = True,
):
    """The one HTTP call to the provider: the response on 2xx, else raise :class:`TokenError`.

    Failures are logged (unless ``log_failures`` is false, for callers that log one line of
    their own) as ``label, status, method, url`` with the query stripped; bodies and headers are
    never logged, which is where tokens live. ``params`` is sent as a form body (POST).
    """
    from tornado.httpclient import HTTPClientError, HTTPRequest

    req = HTTPRequest(
        url,
        method=method,
        headers=headers,
        body=urlencode(params or {}) if method == "POST" else None,
        connect_timeout=timeout,
        request_timeout=timeout,
        validate_cert=validate_cert,
    )
    shown = strip_query(url)

    def failed(err: TokenError, code="") -> TokenError:
        if log_failures:
            log.warning("%s failed: %s %s %s: %s", label, code, method, shown, err.reason)
        return err

    try:
        resp = await http_client.fetch(req, raise_error=False)
    except HTTPClientError as e:  # timeouts (599) are raised even with raise_error=False
        raise failed(ProviderUnavailable(f"{label}: {e}"[:200]), e.code) from None
    except Exception as e:  # connection refused, DNS, TLS...
        err = ProviderUnavailable(f"{label}: {type(e).__name__}: {e}"[:200])
        raise failed(err, type(e).__name__) from None
    if resp.code == 599:
        raise failed(ProviderUnavailable(f"{label}: {resp.error or 'no response'}"[:200]), 599)
    if resp.code >= 300 or resp.code < 200:
        raise failed(classify_failure(resp.code, resp.body, label=label), resp.code)
    return resp


def _json_object(body: bytes, label: str) -> dict:
    try:
        data = json.loads(body)
    except ValueError:
        raise ProviderUnavailable(f"{label}: response is not JSON") from None
    if not isinstance(data, dict):
        raise ProviderUnavailable(f"{label}: response is not a JSON object")
    return data


async def post_form(
    http_client,
    url: str,
    params: dict,
    *,
    headers: dict,
    timeout: float,
    label: str,
    validate_cert: bool = True,
) -> dict:
    """POST a form to a token endpoint; the parsed JSON on 2xx, else raise :class:`TokenError`."""
    resp = await provider_call(
        http_client,
        url,
        params=params,
        headers=headers,
        timeout=timeout,
        label=label,
        validate_cert=validate_cert,
    )
    data = _json_object(resp.body, label)
    if "access_token" not in data:
        raise ProviderUnavailable(f"{label}: response has no access_token")
    return data


class TokenRejected(LoginRequired):
    """The provider's userinfo endpoint refused the access token (HTTP 401/403)."""


async def get_userinfo(
    http_client,
    url: str,
    *,
    headers: dict,
    timeout: float,
    validate_cert: bool = True,
) -> dict:
    """GET the OIDC userinfo with the access token in ``headers`` (or ``url``'s query).

    401/403 (RFC 6750 ``invalid_token``, ``insufficient_scope``) raise :class:`TokenRejected`;
    anything else that is not a JSON object raises :class:`ProviderUnavailable`. Nothing is
    logged here: the caller logs one line per outcome.
    """
    label = "userinfo"
    try:
        resp = await provider_call(
            http_client,
            url,
            method="GET",
            headers=headers,
            timeout=timeout,
            label=label,
            validate_cert=validate_cert,
            log_failures=False,
        )
    except TokenError as e:
        if e.code in (401, 403):
            err = TokenRejected(f"{label}: HTTP {e.code} (access token refused)")
            err.code = e.code
            raise err from None
        if isinstance(e, LoginRequired):  # a 400 is not a refused token: report, keep session
            err = ProviderUnavailable(str(e))
            err.code = e.code
            raise err from None
        raise
    return _json_object(resp.body, label)


# ---------------------------------------------------------------- the broker


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

    async def merged(self, key: str, factory: Callable[[], Awaitable[Any]]) -> Any:
        """Run ``factory()`` once for concurrent callers with the same ``key`` (e.g. the hub's
        re-check of one user), sharing its result or failure."""
        return await self._flight.run(key, factory)

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
                scope=self.auth.token_scope or " ".join(state.get("scope") or []) or None,
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
            scope=exchanged.get("scope") or self.auth.token_scope or None,
            refresh_error=refresh_error,
        )

    async def _exchange(self, name: str, subject: str) -> dict:
        params = exchange_params(
            subject, audience=self.auth.token_audience, scope=self.auth.token_scope
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


async def post_revocation(http_client, url, params, *, headers, timeout, validate_cert=True):
    """RFC 7009 revocation request; 200 is success (the body is empty by the RFC). The caller
    logs a failure (one line naming the user), so :func:`provider_call` does not."""
    resp = await provider_call(
        http_client,
        url,
        params=params,
        headers=headers,
        timeout=timeout,
        label="revocation",
        validate_cert=validate_cert,
        log_failures=False,
    )
    if resp.code != 200:
        raise classify_failure(resp.code, resp.body, label="revocation")


# ---------------------------------------------------------------- the hub API handler


def _handler_class():
    """Build the handler lazily so importing this module does not import JupyterHub."""
    from jupyterhub.apihandlers.base import APIHandler
    from jupyterhub.scopes import has_scope
    from jupyterhub.user import User

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
                metrics.TOKEN_BROKER_DURATION.labels(str(status)).observe(
                    time.perf_counter() - start
                )

        def _fail(self, status: int, reason: str, message: str) -> int:
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.set_header("Cache-Control", "no-store")
            self.finish(json.dumps({"status": status, "reason": reason, "message": message}))
            return status

        async def _answer(self, user_name: str, force: bool) -> int:
            current = self.current_user
            scope = f"{TOKEN_SCOPE}!user={user_name}"
            if not isinstance(current, User) or not has_scope(
                scope, self.parsed_scopes, db=self.db
            ):
                return self._fail(403, "forbidden", f"requires scope {scope}")
            user = self.find_user(user_name)
            if user is None:
                return self._fail(404, "not_found", f"no user {user_name}")
            if not self._own_server_token(user):
                return self._fail(
                    403, "forbidden", "only the user's own servers may fetch data-access tokens"
                )
            broker: TokenBroker = self.authenticator.token_broker
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

    return TokenBrokerHandler


BROKER_ROUTE = r"/api/afhub/users/([^/]+)/token"
