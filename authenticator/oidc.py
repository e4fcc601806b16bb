"""OIDC login for afhub: a thin GenericOAuthenticator subclass.

Only small named steps are overridden; login itself is oauthenticator's. Settings come
from the values file (see ``hub_config/apply.py``, section ``auth``).
"""

from __future__ import annotations

from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from traitlets import Unicode, default


class AfhubOIDCAuthenticator(GenericOAuthenticator):
    """GenericOAuthenticator with afhub's provider presets and group claim handling."""

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
