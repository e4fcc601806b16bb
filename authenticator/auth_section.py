"""Values section owner for login and token handoff: ``auth`` and ``tokens``.

``build(values, plan)`` is pure. ``auth``: the authenticator class, the provider's endpoints
(from :data:`PROVIDER_PATHS` presets under ``issuer`` unless given), client, scopes, claims,
groups, who may log in, and auth_state with its periodic re-check; the demo provider's
settings come from ``hub_config/demo.py``. ``tokens``: the custom scope that authorises the token
broker, who holds it (the ``user`` role, so a server token may request it) and the server token
that requests it (``Spawner.server_token_scopes``), the broker's traits, and the environment of
user servers (``server_ext/contract.py``: a path, never a token, and the renewal margin).
``check(values)`` reports cross-key problems.
"""

from __future__ import annotations

from afhub.hub_config.demo import DEV_CLIENT_ID, dev_issuer
from afhub.hub_config.hub_section import public_url
from afhub.hub_config.plan import SecretRef
from afhub.hub_config.problems import Problem
from afhub.server_ext import contract
from afhub.server_ext.token import token_path_problem

from .tokens import TOKEN_SCOPE, TOKEN_SCOPE_DESCRIPTION

KEYS = ("auth", "tokens")
A = "AfhubOIDCAuthenticator"
BROKER_SCOPE = f"{TOKEN_SCOPE}!user"

# auth.provider -> (authorize, token, userinfo) path under the issuer
PROVIDER_PATHS = {
    "generic": ("/authorize", "/token", "/userinfo"),
    "cilogon": ("/authorize", "/oauth2/token", "/oauth2/userinfo"),
    "iam": ("/authorize", "/token", "/userinfo"),
    "keycloak": (
        "/protocol/openid-connect/auth",
        "/protocol/openid-connect/token",
        "/protocol/openid-connect/userinfo",
    ),
    "globus": ("/v2/oauth2/authorize", "/v2/oauth2/token", "/v2/oauth2/userinfo"),
    "dev": ("/oauth2/authorize", "/oauth2/token", "/userinfo"),
}
PROVIDER_EXTRA_SCOPES = {"cilogon": ["org.cilogon.userinfo"], "iam": ["wlcg.groups"]}
DEFAULT_SCOPES = ["openid", "profile", "email", "offline_access"]


def tokens_enabled(values: dict) -> bool:
    """``tokens.enabled``; default true when ``auth`` is configured."""
    if not values.get("auth"):
        return False
    return values.get("tokens", {}).get("enabled", True)


# JupyterHub's ``admin`` role cannot be changed (jupyterhub.roles.create_role) and carries
# ``admin:auth_state`` (through ``admin:users``). Unless the values grant auth_state to admins,
# members of ``auth.admin_groups`` get this role instead of the admin flag: JupyterHub's admin
# scopes with ``admin:users`` spelled out as its subscopes minus ``admin:auth_state``. They
# manage users, groups, servers and tokens but cannot read refresh, access or id tokens.
ADMIN_ROLE = "afhub-admin"
ADMIN_ROLE_SCOPES = [
    "admin-ui",
    "users",
    "read:roles:users",
    "delete:users",
    "admin:servers",
    "admin:services",
    "tokens",
    "admin:groups",
    "list:services",
    "read:services",
    "read:hub",
    "proxy",
    "shutdown",
    "access:services",
    "access:servers",
    "read:roles",
    "read:metrics",
    "shares",
]


def admin_role(groups) -> dict:
    return {
        "name": ADMIN_ROLE,
        "description": "Hub admins without access to users' auth_state (afhub auth.admin_groups)",
        "scopes": list(ADMIN_ROLE_SCOPES),
        "groups": sorted(groups),
    }


def _build_admins(auth: dict, plan) -> None:
    groups = auth.get("admin_groups") or []
    if not groups:
        return
    if auth.get("admin_auth_state", False):
        plan.set(A, "admin_groups", set(groups))  # JupyterHub's admin role, auth_state included
    else:
        plan.add_role(admin_role(groups))


def build(values: dict, plan) -> None:
    auth = values.get("auth")
    if auth is None:
        return
    _build_auth(values, auth, plan)
    if tokens_enabled(values):
        _build_tokens(values["tokens"], plan)


def _build_auth(values: dict, auth: dict, plan) -> None:
    provider = auth["provider"]
    plan.set("JupyterHub", "authenticator_class", "afhub")
    if provider == "dev":
        issuer = dev_issuer(values)
        plan.set(A, "client_id", DEV_CLIENT_ID)
        plan.set(A, "client_secret", SecretRef("auth.client_secret", generated="dev_client_secret"))
    else:
        issuer = auth.get("issuer", "").rstrip("/")
        plan.set(A, "client_id", auth["client_id"])
        if "client_secret" in auth:
            plan.set(A, "client_secret", SecretRef("auth.client_secret", auth["client_secret"]))
    paths = PROVIDER_PATHS[provider]
    plan.set(A, "authorize_url", auth.get("authorize_url") or issuer + paths[0])
    plan.set(A, "token_url", auth.get("token_url") or issuer + paths[1])
    plan.set(A, "userdata_url", auth.get("userdata_url") or issuer + paths[2])
    if auth.get("revocation_url"):
        plan.set(A, "revocation_url", auth["revocation_url"])
    if auth.get("logout_redirect_url"):
        plan.set(A, "logout_redirect_url", auth["logout_redirect_url"])
    plan.set(
        A,
        "oauth_callback_url",
        auth.get("callback_url") or public_url(values) + "hub/oauth_callback",
    )
    scopes = auth.get("scopes") or DEFAULT_SCOPES + PROVIDER_EXTRA_SCOPES.get(provider, [])
    plan.set(A, "scope", list(scopes))
    plan.set(A, "username_claim", auth["username_claim"])
    plan.set(A, "groups_claim", auth["groups_claim"])
    plan.set(A, "manage_groups", auth["manage_groups"])
    plan.set(A, "enable_auth_state", True)
    plan.set(A, "auth_refresh_age", auth["refresh_age"])
    plan.set(A, "refresh_pre_spawn", True)
    plan.set(A, "upstream_timeout", float(auth["upstream_timeout"]))
    if auth.get("allowed_groups"):
        plan.set(A, "allowed_groups", set(auth["allowed_groups"]))
    if auth.get("allowed_users"):
        plan.set(A, "allowed_users", set(auth["allowed_users"]))
    _build_admins(auth, plan)
    if not (auth.get("allowed_groups") or auth.get("allowed_users")):
        plan.set(A, "allow_all", True)
    plan.set(A, "provider", provider)
    for key in ("help_url", "contact"):
        if auth.get(key):
            plan.set(A, key, auth[key])


def _build_tokens(tokens: dict, plan) -> None:
    plan.set(A, "token_refresh_margin", float(tokens["refresh_margin"]))
    if tokens.get("audience"):
        plan.set(A, "token_audience", tokens["audience"])
    if tokens.get("scope"):
        plan.set(A, "token_scope", tokens["scope"])
    if tokens["exchange"]:
        plan.set(A, "token_exchange", True)
    if tokens.get("exchange_url"):
        plan.set(A, "exchange_url", tokens["exchange_url"])
    plan.add_custom_scope(TOKEN_SCOPE, TOKEN_SCOPE_DESCRIPTION)
    plan.grant("user", BROKER_SCOPE)
    plan.add_server_token_scope(BROKER_SCOPE)
    env = contract.token_environment(file=tokens.get("file"), margin=tokens["refresh_margin"])
    for name, value in env.items():
        plan.add_env(name, value)


def check(values: dict) -> list[Problem]:
    problems = _check_auth(values.get("auth") or {})
    tokens = values.get("tokens") or {}
    if tokens.get("enabled") and not values.get("auth"):
        problems.append(
            Problem("tokens.enabled", "needs an `auth` section (tokens come from login)")
        )
    if tokens.get("exchange") and not (tokens.get("audience") or tokens.get("scope")):
        problems.append(
            Problem("tokens.exchange", "needs tokens.audience or tokens.scope to exchange for")
        )
    if tokens.get("exchange_url") and not tokens.get("exchange"):
        problems.append(Problem("tokens.exchange_url", "only used when tokens.exchange is true"))
    path = tokens.get("file")
    if path and ("{" in path or "}" in path):
        problems.append(
            Problem(
                "tokens.file",
                f"write $UID for the user id, not braces (KubeSpawner expands {{...}}), got {path!r}",
            )
        )
    elif path and not (path.startswith(("/", "~", "$"))):
        problems.append(
            Problem(
                "tokens.file", f"must be an absolute path (or start with ~ or $VAR), got {path!r}"
            )
        )
    elif path and token_path_problem(path):
        problems.append(Problem("tokens.file", f"{token_path_problem(path)}, got {path!r}"))
    return problems


def _check_auth(auth: dict) -> list[Problem]:
    problems = []
    provider = auth.get("provider", "generic")
    if auth and provider != "dev":
        if not auth.get("client_id"):
            problems.append(
                Problem("auth.client_id", "missing required key (needed unless provider is dev)")
            )
        if not (auth.get("issuer") or (auth.get("authorize_url") and auth.get("token_url"))):
            problems.append(
                Problem("auth.issuer", "missing required key (or give authorize_url and token_url)")
            )
    if "dev" in auth and provider != "dev":
        problems.append(Problem("auth.dev", "only used when auth.provider is dev"))
    for key in ("issuer", "authorize_url", "token_url", "userdata_url"):
        url = auth.get(key)
        if isinstance(url, str) and url and not url.startswith(("https://", "http://")):
            problems.append(
                Problem(
                    f"auth.{key}",
                    f"needs a scheme: write https://{url.split('://')[-1]} (got {url!r})",
                )
            )
    return problems
