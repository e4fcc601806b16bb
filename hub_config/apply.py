"""Turn validated values into JupyterHub configuration.

``build(values, data_dir=...)`` is pure: it returns a :class:`Plan` — a nested mapping of
``Section -> trait -> value`` — in which secrets are still :class:`SecretRef` placeholders.
``configure(c, values)`` resolves those (environment, files, generated keys in the data dir)
and sets them on a traitlets ``Config``; ``render_plan`` prints a plan with secrets masked.
Components build their own values sections in a module ``afhub.<component>.hub_values``
with ``build(values, plan)`` (and optionally ``check(values) -> list[Problem]``, see values.py).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import secrets
from .values import component_modules, load

SPAWNER_CLASSES = {
    "local": "afhub-local",
    "kubernetes": "afhub-kubernetes",
    "slurm": "afhub-slurm",
    "htcondor": "afhub-htcondor",
}

# auth.provider -> (authorize, token, userinfo) path under the issuer, and default claims
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
DEV_CLIENT_ID = "afhub-dev"


@dataclass(frozen=True)
class SecretRef:
    """A secret not yet read: ``value`` is the values-file form; ``generated`` a data-dir file."""

    path: str
    value: Any = None
    generated: str | None = None
    transform: str = "text"  # "text" | "hex-bytes" | "key-list"

    def describe(self) -> str:
        if self.generated:
            return f"<generated secret in data dir: {self.generated}>"
        return secrets.describe(self.value)


@dataclass
class Plan:
    """Config to apply: ``sections[Section][trait] = value`` (values may be SecretRef)."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_dir: str = "."
    deployment: str = "standalone"  # "standalone" (afhub up, batch sites) or "z2jh"

    def set(self, section: str, key: str, value: Any) -> None:
        self.sections.setdefault(section, {})[key] = value

    def get(self, section: str, key: str, default: Any = None) -> Any:
        return self.sections.get(section, {}).get(key, default)

    def update(self, section: str, key: str, extra: dict) -> None:
        current = self.sections.setdefault(section, {}).setdefault(key, {})
        current.update(extra)


SectionBuilder = Callable[[dict, Plan], None]


def merge_values(base: dict, extra: dict) -> dict:
    """``extra`` laid over ``base``, mappings merged key by key (neither is modified)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_values(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def public_url(values: dict) -> str:
    hub = values.get("hub", {})
    ip = hub.get("ip", "127.0.0.1")
    host = "127.0.0.1" if ip in ("", "0.0.0.0") else ip
    return f"http://{host}:{hub.get('port', 8000)}{hub.get('base_url', '/')}"


def dev_issuer(values: dict) -> str:
    hub = values.get("hub", {})
    ip = hub.get("ip", "127.0.0.1")
    host = "127.0.0.1" if ip in ("", "0.0.0.0") else ip
    return f"http://{host}:{values.get('auth', {}).get('dev', {}).get('port', 9400)}"


def _build_hub(values: dict, plan: Plan) -> None:
    hub = values.get("hub", {})
    J = "JupyterHub"
    if plan.deployment == "z2jh":
        # The chart owns addresses, proxy, database, cookie secret, crypt key and culling
        # (see z2jh.py, which renders those keys as chart values); afhub adds the rest.
        if "crypt_key" in hub:
            plan.set(
                "CryptKeeper",
                "keys",
                SecretRef("hub.crypt_key", hub["crypt_key"], transform="key-list"),
            )
        if hub.get("admin_users"):
            plan.set("Authenticator", "admin_users", set(hub["admin_users"]))
        return
    plan.set(J, "ip", hub.get("ip", "127.0.0.1"))
    plan.set(J, "port", hub.get("port", 8000))
    plan.set(J, "hub_ip", hub.get("hub_ip", "127.0.0.1"))
    plan.set(J, "hub_port", hub.get("hub_port", 8081))
    plan.set(
        "ConfigurableHTTPProxy", "api_url", f"http://127.0.0.1:{hub.get('proxy_api_port', 8001)}"
    )
    plan.set(J, "base_url", hub.get("base_url", "/"))
    if "db_url" in hub:
        plan.set(J, "db_url", SecretRef("hub.db_url", hub["db_url"]))
    else:
        plan.set(J, "db_url", "sqlite:///" + os.path.join(plan.data_dir, "jupyterhub.sqlite"))
    if "cookie_secret" in hub:
        plan.set(
            J,
            "cookie_secret",
            SecretRef("hub.cookie_secret", hub["cookie_secret"], transform="hex-bytes"),
        )
    else:
        plan.set(J, "cookie_secret_file", os.path.join(plan.data_dir, "jupyterhub_cookie_secret"))
    if "crypt_key" in hub:
        plan.set(
            "CryptKeeper",
            "keys",
            SecretRef("hub.crypt_key", hub["crypt_key"], transform="key-list"),
        )
    else:
        plan.set(
            "CryptKeeper",
            "keys",
            SecretRef("hub.crypt_key", generated="crypt_key", transform="key-list"),
        )
    plan.set(J, "pid_file", os.path.join(plan.data_dir, "jupyterhub.pid"))
    plan.set(J, "concurrent_spawn_limit", hub.get("concurrent_spawn_limit", 100))
    plan.set(J, "log_level", hub.get("log_level", "INFO"))
    plan.set(J, "cleanup_servers", True)
    if hub.get("default_url"):
        plan.set(J, "default_url", hub["default_url"])
    if hub.get("admin_users"):
        plan.set("Authenticator", "admin_users", set(hub["admin_users"]))
    if hub.get("proxy_command"):  # else JupyterHub's default, configurable-http-proxy on PATH
        plan.set("ConfigurableHTTPProxy", "command", list(hub["proxy_command"]))
    plan.set("ConfigurableHTTPProxy", "pid_file", os.path.join(plan.data_dir, "proxy.pid"))
    plan.set("ConfigurableHTTPProxy", "debug", False)
    ns = values.get("named_servers", {})
    plan.set(J, "allow_named_servers", ns.get("enabled", False))
    if ns.get("enabled"):
        plan.set(J, "named_server_limit_per_user", ns.get("limit_per_user", 0))


def _build_auth(values: dict, plan: Plan) -> None:
    auth = values.get("auth")
    if auth is None:
        return
    A = "AfhubOIDCAuthenticator"
    provider = auth.get("provider", "generic")
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
    plan.set(A, "username_claim", auth.get("username_claim", "preferred_username"))
    plan.set(A, "groups_claim", auth.get("groups_claim", "groups"))
    plan.set(A, "manage_groups", auth.get("manage_groups", True))
    plan.set(A, "enable_auth_state", True)
    plan.set(A, "auth_refresh_age", auth.get("refresh_age", 300))
    plan.set(A, "refresh_pre_spawn", True)
    if auth.get("allowed_groups"):
        plan.set(A, "allowed_groups", set(auth["allowed_groups"]))
    if auth.get("allowed_users"):
        plan.set(A, "allowed_users", set(auth["allowed_users"]))
    if auth.get("admin_groups"):
        plan.set(A, "admin_groups", set(auth["admin_groups"]))
    if not (auth.get("allowed_groups") or auth.get("allowed_users")):
        plan.set(A, "allow_all", True)
    plan.set(A, "provider", provider)


def _build_spawner(values: dict, plan: Plan) -> None:
    backend = values.get("backend", {})
    kind = backend.get("type", "local")
    plan.set("JupyterHub", "spawner_class", SPAWNER_CLASSES[kind])
    single = values.get("singleuser", {})
    plan.set("Spawner", "default_url", single.get("default_url", "/lab"))
    if single.get("env"):
        plan.update("Spawner", "environment", dict(single["env"]))
    batch = kind in ("slurm", "htcondor")
    plan.set("Spawner", "start_timeout", backend.get("start_timeout", 600 if batch else 120))
    plan.set("Spawner", "http_timeout", backend.get("http_timeout", 60))
    # backend.<type> settings, images and profiles: afhub.spawner.hub_values


def _build_culling(values: dict, plan: Plan) -> None:
    cull = values.get("culling", {})
    if not cull.get("enabled", True) or plan.deployment == "z2jh":
        return
    cmd = [
        sys.executable,
        "-m",
        "jupyterhub_idle_culler",
        f"--timeout={cull.get('timeout', 3600)}",
        f"--cull-every={cull.get('every', 300)}",
        f"--max-age={cull.get('max_age', 0)}",
    ]
    if cull.get("users"):
        cmd.append("--cull-users")
    services = plan.get("JupyterHub", "services", [])
    plan.set("JupyterHub", "services", services + [{"name": "idle-culler", "command": cmd}])
    scopes = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
    if cull.get("users"):
        scopes.append("admin:users")
    roles = plan.get("JupyterHub", "load_roles", [])
    plan.set(
        "JupyterHub",
        "load_roles",
        roles + [{"name": "idle-culler", "scopes": scopes, "services": ["idle-culler"]}],
    )


CORE_BUILDERS: list[SectionBuilder] = [_build_hub, _build_auth, _build_spawner, _build_culling]


DEPLOYMENTS = ("standalone", "z2jh")


def build(
    values: dict,
    *,
    data_dir: str | None = None,
    overrides: dict | None = None,
    deployment: str = "standalone",
) -> Plan:
    """Validate ``values`` (merged with ``overrides``) and build the config plan. No I/O.

    ``deployment="z2jh"`` leaves to the Zero to JupyterHub chart what it manages itself
    (addresses, proxy, database, cookie secret, idle culler).
    """
    if deployment not in DEPLOYMENTS:
        raise ValueError(f"deployment must be one of {', '.join(DEPLOYMENTS)}, got {deployment!r}")
    merged = merge_values(values, overrides or {})
    load(merged)
    plan = Plan(data_dir=os.path.abspath(data_dir or "."), deployment=deployment)
    for builder in CORE_BUILDERS:
        builder(merged, plan)
    for module in component_modules():
        module.build(merged, plan)
    return plan


def _resolve(ref: SecretRef, data_dir: str, environ) -> Any:
    if ref.generated:
        text = secrets.ensure_generated(os.path.join(data_dir, ref.generated))
    else:
        text = secrets.resolve(ref.value, ref.path, environ)
    if ref.transform == "hex-bytes":
        return bytes.fromhex(text)
    if ref.transform == "key-list":
        return [k for k in text.split(";") if k.strip()]
    return text


def apply_plan(c, plan: Plan, environ=None) -> None:
    """Set every entry of ``plan`` on Config ``c``, reading secrets as needed."""
    os.makedirs(plan.data_dir, mode=0o700, exist_ok=True)
    for section, traits in plan.sections.items():
        for key, value in traits.items():
            if isinstance(value, SecretRef):
                value = _resolve(value, plan.data_dir, environ)
            setattr(c[section], key, value)


def configure(
    c,
    path_or_values,
    *,
    data_dir: str | None = None,
    overrides: dict | None = None,
    environ=None,
    deployment: str | None = None,
):
    """Validate a values file (path or dict) and apply it to traitlets Config ``c``.

    This is the one entry point for every deployment: ``afhub up`` writes a config that calls
    it, Zero to JupyterHub's ``hub.extraConfig`` and batch sites' ``jupyterhub_config.py`` call
    it directly. ``deployment`` is ``"standalone"`` or ``"z2jh"``; by default it is detected
    (``"z2jh"`` inside the chart's hub pod, see ``z2jh.detect_deployment``). Raises
    :class:`afhub.hub_config.values.ValuesError` naming each bad key.
    """
    values = path_or_values if isinstance(path_or_values, dict) else None
    if values is None:
        from .values import load_file

        values = load_file(path_or_values)
    environ = os.environ if environ is None else environ
    if deployment is None:
        from .z2jh import detect_deployment

        deployment = detect_deployment(environ)
    data_dir = data_dir or environ.get("AFHUB_DATA_DIR") or os.getcwd()
    plan = build(values, data_dir=data_dir, overrides=overrides, deployment=deployment)
    from .values import warnings

    for w in warnings(values):  # the hub's log (stderr while its config loads)
        logging.getLogger("afhub").warning("values: %s", w)
    apply_plan(c, plan, environ)
    return plan


def _py(value: Any) -> str:
    if isinstance(value, SecretRef):
        return repr(value.describe())
    if isinstance(value, set):
        return repr(sorted(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    return repr(value)


def render_plan(plan: Plan) -> str:
    """The plan as ``c.Section.trait = value`` lines, secrets masked."""
    lines = [f"# afhub effective configuration (data dir: {plan.data_dir})"]
    for section in sorted(plan.sections):
        for key in sorted(plan.sections[section]):
            lines.append(f"c.{section}.{key} = {_py(plan.sections[section][key])}")
    return "\n".join(lines) + "\n"
