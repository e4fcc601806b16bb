"""The demo provider as the hub sees it: pure settings for ``afhub up`` and the ``auth`` section.

Where the embedded demo provider listens (:func:`dev_settings`, :func:`dev_host`,
:func:`dev_issuer`), the client id the hub uses with it, the claims of its demo users
(:func:`dev_user_claims`) and the command line that starts it (:func:`idp_command`). The
provider program itself is ``afhub.authenticator.dev_idp`` (the ``demo`` extra); nothing here
imports it, so a hub without the extra (and its image) still reads values files naming
``auth.provider: dev``.
"""

from __future__ import annotations

import json
import sys

DEV_CLIENT_ID = "afhub-dev"  # the mock accepts any client; the hub's secret is generated


def dev_settings(values: dict) -> dict:
    """``auth.dev`` with its schema defaults, also when the values file leaves it out."""
    from afhub.hub_config.values import defaults

    return {**defaults("auth.dev"), **(values.get("auth") or {}).get("dev", {})}


def dev_host(values: dict) -> str:
    """The demo provider listens on the hub's address (loopback for all interfaces)."""
    from afhub.hub_config.hub_section import connect_host

    return connect_host(values["hub"]["ip"])


def dev_issuer(values: dict) -> str:
    """The demo provider's issuer URL (``values`` with defaults filled)."""
    return f"http://{dev_host(values)}:{dev_settings(values)['port']}"


def dev_user_claims(values: dict) -> list[dict]:
    """oidc-provider-mock ``--user-claims`` for each demo user of ``auth.dev.users``."""
    out = []
    for user in dev_settings(values).get("users", []):
        out.append(
            {
                "sub": user["name"],
                "preferred_username": user["name"],
                "name": user["name"],
                "email": user.get("email", f"{user['name']}@example.org"),
                "groups": list(user.get("groups", [])),
            }
        )
    return out


def idp_command(
    values: dict,
    host: str,
    port: int,
    *,
    signing_key: str | None = None,
    wlcg: tuple[str, str | None] | None = None,
) -> list[str]:
    """The command line that starts the demo provider for ``values`` on ``host:port`` (a path
    to the signing key, never the key); ``wlcg``: the storage's ``(audience, scope templates)``
    its access tokens are for (``data.token_request``), when the facility has a ``data``
    section."""
    cmd = [
        sys.executable,
        "-m",
        "afhub.authenticator.dev_idp",
        "-H",
        host,
        "-p",
        str(port),
        "-e",
        str(dev_settings(values)["token_lifetime"]),
    ]
    for claims in dev_user_claims(values):
        cmd += ["--user-claims", json.dumps(claims, sort_keys=True)]
    if signing_key:
        cmd += ["--signing-key", signing_key]
    if wlcg:
        audience, scope = wlcg
        cmd += ["--wlcg-audience", audience]
        for template in (scope or "").split():
            cmd += ["--wlcg-scope", template]
    return cmd
