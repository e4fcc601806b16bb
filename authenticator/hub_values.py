"""Values -> hub config for token handoff (section ``tokens``) and auth extras.

``build(values, plan)`` is pure: it adds to the plan that ``hub_config/apply.py`` built
(``_build_auth`` sets login, groups and auth_state). Here: the custom scope that authorises
the token broker, who holds it (the ``user`` role, so a server token may request it) and the
server token that requests it (``Spawner.server_token_scopes``), the broker's traits, and the
environment of user servers: ``BEARER_TOKEN_FILE`` (a path, never a token) and the renewal
margin. ``check(values)`` reports cross-key problems.
"""

from __future__ import annotations

from afhub.hub_config.values import Problem
from afhub.server_ext import contract

from .tokens import TOKEN_SCOPE, TOKEN_SCOPE_DESCRIPTION

A = "AfhubOIDCAuthenticator"
# JupyterHub's default ``server`` role (what a server token gets when nothing is requested)
SERVER_ROLE_SCOPES = ["users:activity!user", "access:servers!server"]
BROKER_SCOPE = f"{TOKEN_SCOPE}!user"


def tokens_enabled(values: dict) -> bool:
    """``tokens.enabled``; default true when ``auth`` is configured."""
    if not values.get("auth"):
        return False
    return values.get("tokens", {}).get("enabled", True)


def _with_user_role_scope(roles: list[dict], scope: str) -> list[dict]:
    out = [dict(r) for r in roles]
    for role in out:
        if role.get("name") == "user":
            scopes = list(role.get("scopes") or ["self"])
            if scope not in scopes:
                scopes.append(scope)
            role["scopes"] = scopes
            return out
    return out + [
        {"name": "user", "description": "Standard user privileges", "scopes": ["self", scope]}
    ]


def _server_token_scopes(existing) -> list[str]:
    scopes = list(existing) if isinstance(existing, (list, tuple)) else list(SERVER_ROLE_SCOPES)
    for s in SERVER_ROLE_SCOPES + [BROKER_SCOPE]:
        if s not in scopes:
            scopes.append(s)
    return scopes


def build(values: dict, plan) -> None:
    auth = values.get("auth")
    if not auth:
        return
    if "upstream_timeout" in auth:
        plan.set(A, "upstream_timeout", float(auth["upstream_timeout"]))
    if not tokens_enabled(values):
        return
    tokens = values.get("tokens", {})
    plan.set(
        A,
        "token_refresh_margin",
        float(tokens.get("refresh_margin", contract.DEFAULT_REFRESH_MARGIN)),
    )
    if tokens.get("audience"):
        plan.set(A, "token_audience", tokens["audience"])
    if tokens.get("scope"):
        plan.set(A, "token_scope", tokens["scope"])
    if tokens.get("exchange"):
        plan.set(A, "token_exchange", True)
    if tokens.get("exchange_url"):
        plan.set(A, "exchange_url", tokens["exchange_url"])

    J = "JupyterHub"
    custom = dict(plan.get(J, "custom_scopes", {}) or {})
    custom[TOKEN_SCOPE] = {"description": TOKEN_SCOPE_DESCRIPTION}
    plan.set(J, "custom_scopes", custom)
    plan.set(J, "load_roles", _with_user_role_scope(plan.get(J, "load_roles", []), BROKER_SCOPE))
    plan.set(
        "Spawner",
        "server_token_scopes",
        _server_token_scopes(plan.get("Spawner", "server_token_scopes")),
    )
    plan.update(
        "Spawner",
        "environment",
        contract.token_environment(file=tokens.get("file"), margin=tokens.get("refresh_margin")),
    )


def check(values: dict) -> list[Problem]:
    problems: list[Problem] = []
    tokens = values.get("tokens") or {}
    if not tokens:
        return problems
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
    return problems
