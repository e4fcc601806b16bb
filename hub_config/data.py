"""Values section owner for ``data``: the storage the data-access token is for.

``build(values, plan)`` is pure: it tells user servers where the storage is and which CA to
trust (``server_ext/contract.py`` :func:`data_environment`: ``X509_CERT_FILE``/``_DIR`` and
the endpoints, never a token), and makes the token request ask for the storage's audience and
the user's scopes (the authenticator's ``token_audience``/``token_scope``, unless ``tokens``
names its own). ``check(values)`` reports cross-key problems. The embedded storage itself
(``data.embedded``) is started by ``afhub up`` (``runner.py``, ``xrootd.py``), which fills in
``origin``, ``cache`` and ``ca_file`` before the hub reads these values.
"""

from __future__ import annotations

from afhub.server_ext import contract

from .problems import Problem

KEYS = ("data",)
A = "AfhubOIDCAuthenticator"


def data_settings(values: dict) -> dict | None:
    """``data`` with its schema defaults, or None when the values configure no storage."""
    data = values.get("data")
    if not data:
        return None
    from .values import defaults

    return {**defaults("data"), **data}


def token_request(values: dict) -> tuple[str | None, str | None]:
    """``(audience, scope)`` the token request asks for: ``tokens.*`` where given, else
    ``data.audience`` and ``data.scopes`` (``{username}`` left for the broker to fill in)."""
    tokens = values.get("tokens") or {}
    data = data_settings(values)
    audience = tokens.get("audience") or (data["audience"] if data else None)
    scope = tokens.get("scope") or (" ".join(data["scopes"]) if data else None)
    return audience, scope


def environment(values: dict) -> dict[str, str]:
    """The data contract's variables (CA trust, endpoints, the XRootD client's settings) for
    user servers, Dask clusters and batch jobs alike; empty without a ``data`` section."""
    data = data_settings(values)
    if data is None:
        return {}
    return contract.data_environment(
        origin=data.get("origin"),
        cache=data.get("cache"),
        ca_file=data.get("ca_file"),
        ca_dir=data.get("ca_dir"),
        samples=data["sample_path"],
        audience=data["audience"],
        margin=(values.get("tokens") or {}).get("refresh_margin"),
    )


def build(values: dict, plan) -> None:
    data = data_settings(values)
    if data is None:
        return
    env = environment(values)
    for name, value in env.items():
        plan.add_env(name, value)
    from afhub.authenticator.auth_section import tokens_enabled

    if not tokens_enabled(values):
        return
    tokens = values.get("tokens") or {}
    # the authenticator's section sets these when ``tokens`` names them
    if not tokens.get("audience"):
        plan.set(A, "token_audience", data["audience"])
    if not tokens.get("scope"):
        plan.set(A, "token_scope", " ".join(data["scopes"]))


def check(values: dict) -> list[Problem]:
    data = values.get("data")
    if not data:
        return []
    problems = []
    provider = (values.get("auth") or {}).get("provider")
    if data.get("embedded"):
        if provider != "dev":
            problems.append(
                Problem(
                    "data.embedded",
                    "needs auth.provider: dev (the demo storage trusts the demo provider's keys)",
                )
            )
    elif not data.get("origin"):
        problems.append(Problem("data.origin", "missing required key (needed unless embedded)"))
    if not values.get("auth"):
        problems.append(Problem("data", "needs an `auth` section (the storage checks tokens)"))
    tokens = values.get("tokens") or {}
    if tokens.get("enabled") is False:
        problems.append(
            Problem(
                "tokens.enabled", "must not be false with a `data` section (no token to read with)"
            )
        )
    for key in ("audience", "scope"):
        theirs = tokens.get(key)
        ours = data.get(key if key == "audience" else "scopes")
        if theirs and ours is not None:
            problems.append(
                Problem(
                    f"tokens.{key}",
                    f"set data.{'audience' if key == 'audience' else 'scopes'} instead "
                    "(one place says what the storage token asks for)",
                )
            )
    return problems
