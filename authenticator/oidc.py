"""OIDC login for afhub: a thin GenericOAuthenticator subclass.

Only small named steps are overridden; login itself is oauthenticator's:

- ``build_auth_state_dict`` records when the access token expires;
- ``refresh_user_hook`` (default) refreshes ahead of expiry through the token broker, merged
  with concurrent broker requests, instead of waiting for a request to fail;
- ``get_handlers`` adds the token broker API; ``logout_handler`` revokes (RFC 7009) and clears
  auth_state at logout.

Settings come from the values file (``hub_config/apply.py`` section ``auth``,
``authenticator/hub_values.py`` section ``tokens``).
"""

from __future__ import annotations

import time

from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLogoutHandler
from tornado import web
from traitlets import Any, Bool, Float, Unicode, default

from . import metrics  # noqa: F401  (defines the /hub/metrics series in the hub process)
from .broker import (
    BROKER_ROUTE,
    LoginRequired,
    TokenBroker,
    TokenError,
    _handler_class,
    expiry_from_response,
    needs_refresh,
)


class AfhubLogoutHandler(OAuthLogoutHandler):
    """Logout that also revokes the user's tokens at the provider and forgets auth_state."""

    async def handle_logout(self):
        await super().handle_logout()
        user = self.current_user
        if user is not None and self.authenticator.enable_auth_state:
            await self.authenticator.token_broker.revoke(user)


class AfhubOIDCAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator with afhub's provider presets and group claim handling."""

    logout_handler = AfhubLogoutHandler

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
        120,
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
        help="Space-separated scopes requested for the delivered token (default: none).",
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

    @default("token_broker")
    def _token_broker_default(self):
        return TokenBroker(self)

    @default("refresh_user_hook")
    def _refresh_user_hook_default(self):
        return _refresh_ahead_of_expiry

    def get_handlers(self, app):
        return super().get_handlers(app) + [(BROKER_ROUTE, _handler_class())]

    def build_auth_state_dict(self, token_info, user_info):
        state = super().build_auth_state_dict(token_info, user_info)
        now = time.time()
        state["expires_at"], state["lifetime"] = expiry_from_response(token_info, now=now)
        state["refreshed_at"] = now
        return state

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
    """``refresh_user_hook``: True while the token is fresh, a refreshed auth model once it
    is within the margin, False when the provider refused the refresh token. A provider
    that is down keeps the session (True); the broker reports the failure to the server."""
    if not auth_state:
        return None  # oauthenticator asks for a new login
    if auth_state.get("login_required"):
        return False
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
