"""Render Zero to JupyterHub chart values for a facility described by an afhub values file.

Pure: values in, chart values (a dict) out. The chart keeps what it manages itself (proxy,
database, cookie secret, crypt key, the idle culler, which it gets from ``culling``); afhub's
own settings reach the hub through ``hub.extraConfig`` calling
``configure(c, <mounted values file>, deployment="z2jh")``. Secrets are never copied in:
``{env: VAR}`` secrets become ``secretKeyRef`` entries of a Kubernetes Secret the operator
creates, ``{file: PATH}`` secrets must be mounted at PATH by the operator.
"""

from __future__ import annotations

from typing import Any

from .values import Problem, ValuesError, load

EXTRA_CONFIG = """\
from afhub.hub_config import configure
configure(c, {path!r}, data_dir="/srv/jupyterhub", deployment="z2jh")
"""

SECRET_KEYS = (("hub", "db_url"), ("hub", "crypt_key"), ("auth", "client_secret"))


def env_secrets(values: dict) -> list[str]:
    """Names of the environment variables the values' ``{env: VAR}`` secrets read."""
    names = []
    for section, key in SECRET_KEYS:
        v = values.get(section, {}).get(key)
        if isinstance(v, dict) and "env" in v:
            names.append(v["env"])
    return names


def chart_values(
    values: dict,
    *,
    values_dir: str = "/etc/afhub",
    configmap: str = "afhub-values",
    secret: str = "afhub-secrets",
) -> dict[str, Any]:
    """z2jh chart values that run this facility; raise ValuesError for what cannot run there."""
    load(values)
    problems = []
    backend = values.get("backend", {}).get("type", "local")
    if backend != "kubernetes":
        problems.append(
            Problem("backend.type", f"must be kubernetes under Zero to JupyterHub, got {backend!r}")
        )
    auth = values.get("auth", {})
    if auth.get("provider") == "dev":
        problems.append(Problem("auth.provider", "the dev provider only runs with `afhub up`"))
    if auth and not auth.get("callback_url"):
        problems.append(
            Problem(
                "auth.callback_url",
                "missing required key (the hub's public URL + hub/oauth_callback)",
            )
        )
    if "cookie_secret" in values.get("hub", {}):
        problems.append(
            Problem("hub.cookie_secret", "set hub.cookieSecret in the chart values instead")
        )
    if problems:
        raise ValuesError(problems)

    hub = values.get("hub", {})
    named = values.get("named_servers", {})
    cull = values.get("culling", {})
    single = values.get("singleuser", {})
    out: dict[str, Any] = {
        "hub": {
            "baseUrl": hub.get("base_url", "/"),
            "concurrentSpawnLimit": hub.get("concurrent_spawn_limit", 100),
            "allowNamedServers": named.get("enabled", False),
            "extraConfig": {"afhub": EXTRA_CONFIG.format(path=f"{values_dir}/values.yaml")},
            "extraVolumes": [{"name": "afhub-values", "configMap": {"name": configmap}}],
            "extraVolumeMounts": [
                {"name": "afhub-values", "mountPath": values_dir, "readOnly": True}
            ],
        },
        "cull": {
            "enabled": cull.get("enabled", True),
            "timeout": cull.get("timeout", 3600),
            "every": cull.get("every", 300),
            "maxAge": cull.get("max_age", 0),
            "users": cull.get("users", False),
        },
        "singleuser": {"defaultUrl": single.get("default_url", "/lab")},
    }
    if named.get("enabled"):
        out["hub"]["namedServerLimitPerUser"] = named.get("limit_per_user", 0)
    env = {
        name: {"valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}
        for name in env_secrets(values)
    }
    if env:
        out["hub"]["extraEnv"] = env
    if single.get("env"):
        out["singleuser"]["extraEnv"] = dict(single["env"])
    return out
