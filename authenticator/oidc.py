"""OIDC login for afhub: a thin GenericOAuthenticator subclass.

Only small named steps are overridden; login itself is oauthenticator's:

- ``build_auth_state_dict`` records when the access token expires;
- ``refresh_user_hook`` (default, every ``auth_refresh_age`` s of a user's hub requests and
  before each spawn) refreshes ahead of expiry through the token broker, merged with concurrent
  broker requests, then re-reads userinfo so groups, admin status and ``allowed_groups`` follow
  the provider without a new login (:meth:`AfhubOIDCAuthenticator.refresh_from_provider`,
  :meth:`~AfhubOIDCAuthenticator.model_from_userinfo`, pure :func:`refreshed_auth_model`);
- ``get_handlers`` adds the token broker API; ``logout_handler`` revokes (RFC 7009) and clears
  auth_state at logout.

Settings come from the values file (``authenticator/auth_section.py``, sections ``auth`` and
``tokens``).
"""

from __future__ import annotations

import time
from inspect import isawaitable

from afhub.hub_config.logs import into_hub_log
from afhub.server_ext.contract import DEFAULT_REFRESH_MARGIN
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler, OAuthLogoutHandler
from tornado import web
from traitlets import Any, Bool, Float, Unicode, default

from . import metrics  # noqa: F401  (defines the /hub/metrics series in the hub process)
from .broker import TokenBroker
from .handlers import BROKER_ROUTE, TokenBrokerHandler
from .refusal import refusal, refused_names
from .singleflight import SingleFlight
from .tokens import (
    LoginRequired,
    ProviderUnavailable,
    TokenError,
    TokenRejected,
    expiry_from_response,
    needs_refresh,
)


class NotAllowed(Exception):
    """The provider's current userinfo no longer lets this user in; the message says why."""


def refreshed_auth_model(
    *,
    name: str,
    state: dict,
    groups: set[str] | None,
    admin_users: set[str],
    admin_groups: set[str],
) -> dict:
    """The auth model ``refresh_user`` returns, decided as at login (oauthenticator's
    ``_apply_managed_groups``): ``admin`` is True for ``admin_users``; otherwise, when groups are
    managed and ``admin_groups`` is set, whether a group is an admin group; else None (unchanged).
    ``groups`` (sorted) only when groups are managed (``groups`` not None)."""
    model: dict = {
        "name": name,
        "admin": True if name in admin_users else None,
        "auth_state": state,
    }
    if groups is not None:
        model["groups"] = sorted(groups)
        if admin_groups and not model["admin"]:
            model["admin"] = bool(set(groups) & set(admin_groups))
    return model


class AfhubLogoutHandler(OAuthLogoutHandler):
    """Logout that also revokes the user's tokens at the provider and forgets auth_state."""

    async def handle_logout(self):
        await super().handle_logout()
        user = self.current_user
        if user is not None and self.authenticator.enable_auth_state:
            await self.authenticator.token_broker.revoke(user)


class AfhubCallbackHandler(OAuthCallbackHandler):
    """The provider's redirect back to the hub. Same as oauthenticator's, except what a person
    sees when the hub does not let them in: who signed in, which groups grant access and whom
    to ask (:mod:`.refusal`), under a short heading instead of the message twice."""

    async def get(self):
        self.check_arguments()
        token = refused_names.set([])
        try:
            user = await self.login_user()
            refused = list(refused_names.get() or [])
        except web.HTTPError as e:
            if e.status_code == 400 and not e.reason:
                e.reason = "Sign-in incomplete"  # the heading; the message says what is missing
            raise
        finally:
            refused_names.reset(token)
        if user is None:
            raise self.authenticator.refusal_error(refused[-1] if refused else None)
        self.redirect(self.get_next_url(user))


class AfhubOIDCAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator with afhub's provider presets and group claim handling."""

    logout_handler = AfhubLogoutHandler
    callback_handler = AfhubCallbackHandler

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        into_hub_log()  # the broker's refresh lines and failures in the hub's log

    help_url = Unicode(
        "",
        config=True,
        help="""Page explaining how to get access, linked from the page people see when they
        signed in but are not in an allowed group. Values file: ``auth.help_url``. Default: none.""",
    )

    contact = Unicode(
        "",
        config=True,
        help="""Whom to ask for access (an e-mail address, a URL or a sentence), shown on the same
        page. Values file: ``auth.contact``. Default: none.""",
    )

    async def check_allowed(self, username, auth_model):
        allowed = await super().check_allowed(username, auth_model)
        if not allowed:
            names = refused_names.get()
            if names is not None:  # a login in progress: its handler shows whom it refused
                names.append(username)
        return allowed

    def refusal_error(self, username: str | None) -> web.HTTPError:
        """The 403 for someone the provider signed in and this hub does not let in."""
        groups = set(self.allowed_groups or ()) | set(self.admin_groups or ())
        text, page = refusal(
            username=username, groups=groups, help_url=self.help_url, contact=self.contact
        )
        err = web.HTTPError(403, "%s", text, reason="Not a member of this hub")
        err.jupyterhub_message = text
        err.jupyterhub_html_message = page
        return err

    login_service = Unicode("your institution", config=True, help="Name on the login button.")

    provider = Unicode(
        "generic",
        config=True,
        help="Provider kind (generic, cilogon, iam, keycloak, globus, dev); sets the login button name.",
    )

    groups_claim = Unicode(
        "groups",
        config=True,
        help="""Userinfo claim holding the user's groups (default ``groups``).

        A dotted path (``a.b``) looks into nested claims; a claim whose own name contains dots
        (``wlcg.groups``) is matched literally first.""",
    )

    revocation_url = Unicode(
        "",
        config=True,
        help="RFC 7009 revocation endpoint called at logout (default: none).",
    )

    token_refresh_margin = Float(
        DEFAULT_REFRESH_MARGIN,
        config=True,
        help="""Seconds before the access token expires at which the hub refreshes it
        (default 120; at most a third of the token's lifetime is used for short-lived tokens).""",
    )

    upstream_timeout = Float(
        10,
        config=True,
        help="Timeout in seconds of each call to the provider's token endpoint (default 10).",
    )

    retry_interval = Float(
        5,
        config=True,
        help="""Seconds during which a failed refresh (provider unreachable) is answered from
        memory instead of calling the provider again (default 5).""",
    )

    min_refresh_interval = Float(
        10,
        config=True,
        help="Forced refreshes (broker POST) closer than this many seconds (at most a quarter of the token lifetime) reuse the last one (default 10).",
    )

    token_audience = Unicode(
        "",
        config=True,
        help="Audience of the delivered data-access token (default: none, the login token as is).",
    )

    token_scope = Unicode(
        "",
        config=True,
        help="Space-separated scopes requested for the delivered token (default: none); "
        "``{username}`` stands for the hub user's name (``data.scopes``).",
    )

    token_exchange = Bool(
        False,
        config=True,
        help="Deliver an RFC 8693 exchanged token for token_audience/token_scope (default False).",
    )

    exchange_url = Unicode(
        "",
        config=True,
        help="Token endpoint used for RFC 8693 exchange (default: ``token_url``).",
    )

    token_broker = Any(help="The :class:`TokenBroker` of this hub (created on first use).")

    recheck_flight = Any(help="Merges concurrent group re-checks of one user (one userinfo call).")

    @default("token_broker")
    def _token_broker_default(self):
        return TokenBroker(self)

    @default("recheck_flight")
    def _recheck_flight_default(self):
        return SingleFlight()

    @default("refresh_user_hook")
    def _refresh_user_hook_default(self):
        return _refresh_ahead_of_expiry

    def get_handlers(self, app):
        return super().get_handlers(app) + [(BROKER_ROUTE, TokenBrokerHandler)]

    def build_auth_state_dict(self, token_info, user_info):
        state = super().build_auth_state_dict(token_info, user_info)
        now = time.time()
        state["expires_at"], state["lifetime"] = expiry_from_response(token_info, now=now)
        state["refreshed_at"] = now
        return state

    def rechecks_userinfo(self) -> bool:
        """Whether ``refresh_user`` re-reads userinfo (needs ``userdata_url``; with
        ``userdata_from_id_token`` claims only change at login)."""
        return bool(self.userdata_url) and not self.userdata_from_id_token

    async def model_from_userinfo(self, name: str, state: dict, userinfo: dict) -> dict:
        """The refreshed auth model of ``name`` for fresh ``userinfo`` (no I/O): groups through
        the login's group-claim function, admin from ``admin_users``/``admin_groups``, and the
        full ``state`` with ``oauth_user`` replaced. Raises :class:`NotAllowed` when the login
        would now be refused: another username, ``blocked_users``, not allowed (oauthenticator's
        ``check_allowed``: ``allowed_groups``, ``allowed_users``, ``allowed_scopes``, admins)."""
        try:
            fresh_name = self.normalize_username(self.user_info_to_username(userinfo))
        except web.HTTPError as e:
            raise NotAllowed(e.log_message or "no username in userinfo") from None
        if fresh_name != name:
            raise NotAllowed(f"the provider now gives the username {fresh_name!r}")
        new_state = {**state, self.user_auth_state_key: userinfo}
        groups = None
        if self.manage_groups:
            groups = self.get_user_groups(new_state)
            if isawaitable(groups):
                groups = await groups
            groups = set(groups)
        model = refreshed_auth_model(
            name=name,
            state=new_state,
            groups=groups,
            admin_users=self.admin_users,
            admin_groups=self.admin_groups,
        )
        blocked_pass = self.check_blocked_users(name, model)
        if isawaitable(blocked_pass):
            blocked_pass = await blocked_pass
        if not blocked_pass:
            raise NotAllowed("in blocked_users")
        allowed = self.allow_all or self.check_allowed(name, model)
        if isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            raise NotAllowed("not in allowed_groups or allowed_users any more")
        return model

    async def _userinfo_for(self, user, state: dict) -> dict:
        """Userinfo with the current access token; when it is refused and was not just
        refreshed, once more after a forced refresh (merged with concurrent ones)."""
        broker = self.token_broker
        try:
            return await broker.userinfo(state)
        except TokenRejected:
            fresh, refresh_error = await broker.fresh_state(user, force=True, full=True)
            if refresh_error:
                raise ProviderUnavailable(refresh_error) from None
            if fresh.get("access_token") == state.get("access_token"):
                raise  # refreshed moments ago, and still refused
            return await broker.userinfo(fresh)

    async def refresh_from_provider(self, user) -> dict | bool:
        """``refresh_user`` with a provider: tokens refreshed ahead of expiry (single-flight
        with the broker), then userinfo re-read and the auth model rebuilt as at login.
        Concurrent re-checks of one user share one run (one userinfo call).

        Returns the model (full auth_state, refresh token included, as stored after any refresh
        that ran meanwhile); False when the provider refuses the refresh token or a fresh access
        token, or the user is no longer allowed (auth_state is then marked ``login_required``
        so neither the hub nor the broker asks the provider again until the next login); True
        when the provider is unreachable or failing (session and groups kept, one log line)."""
        result = await self.recheck_flight.run(user.name, lambda: self._recheck(user))
        return dict(result) if isinstance(result, dict) else result  # each caller its own model

    async def _recheck(self, user) -> dict | bool:
        broker = self.token_broker
        try:
            state, refresh_error = await broker.fresh_state(user, full=True)
        except LoginRequired:
            return False
        except TokenError:
            return True  # the broker logged the failed refresh
        if refresh_error:
            return True
        try:
            userinfo = await self._userinfo_for(user, state)
        except TokenRejected as e:
            self.log.warning("%s must log in again: %s", user.name, e)
            await broker.require_login(user, f"{e}; log in again")
            return False
        except LoginRequired:
            return False  # the forced refresh was refused; the broker marked and logged it
        except TokenError as e:
            self.log.warning("Groups of %s not re-checked, login and groups kept: %s", user.name, e)
            return True
        try:
            state = await broker.settled_state(user)
            model = await self.model_from_userinfo(user.name, state, userinfo)
        except LoginRequired:
            return False
        except NotAllowed as e:
            self.log.warning("%s must log in again: %s", user.name, e)
            await broker.require_login(user, f"no longer allowed here ({e}); log in again")
            return False
        if "groups" in model:
            before = sorted(g.name for g in getattr(user, "groups", []))
            if before != model["groups"]:
                self.log.info("Groups of %s from the provider: %s", user.name, model["groups"])
        return model

    @default("login_service")
    def _login_service_default(self):
        return {
            "cilogon": "CILogon",
            "iam": "INDIGO IAM",
            "keycloak": "Keycloak",
            "globus": "Globus",
            "dev": "afhub demo IdP",
        }.get(self.provider, "your institution")

    @default("basic_auth")
    def _basic_auth_default(self):
        return True

    @default("auth_state_groups_key")
    def _groups_key_default(self):
        claim = self.groups_claim

        def groups(auth_state):
            user = auth_state.get("oauth_user") or {}
            if claim in user:
                value = user[claim]
            else:
                value = user
                for part in claim.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
            if isinstance(value, str):
                value = [value]
            return [str(g).lstrip("/") for g in (value or [])]

        return groups

    def user_info_to_username(self, user_info):
        """The configured claim, or a clear 403 (not a 500) when the provider did not send it."""
        claim = self.username_claim
        if not callable(claim) and not user_info.get(claim):
            raise web.HTTPError(
                403,
                f"Your identity provider did not send the '{claim}' claim, so no username can be "
                "given to you. Ask the facility operators to check your account (or auth.username_claim).",
            )
        return super().user_info_to_username(user_info)


async def _refresh_ahead_of_expiry(authenticator, user, auth_state):
    """``refresh_user_hook``: see :meth:`AfhubOIDCAuthenticator.refresh_from_provider`.

    None without auth_state (oauthenticator then asks for a login), False once marked
    ``login_required``. Without a userinfo endpoint (or with ``userdata_from_id_token``) only
    tokens are refreshed: True while the token is fresh, a refreshed auth model (groups
    unchanged) once it is within the margin, False when the provider refused the refresh token,
    True when it is down (the broker reports the failure to the server)."""
    if not auth_state:
        return None
    if auth_state.get("login_required"):
        return False
    if authenticator.rechecks_userinfo():
        return await authenticator.refresh_from_provider(user)
    if not needs_refresh(auth_state, now=time.time(), margin=authenticator.token_refresh_margin):
        return True
    try:
        state, _error = await authenticator.token_broker.fresh_state(user, full=True)
    except LoginRequired:
        return False
    except TokenError:
        return True
    model = {"name": user.name, "auth_state": state}
    if authenticator.manage_groups:
        model["groups"] = None  # unchanged; groups are read at login
    return model
