"""Values section owner for the hub itself: ``hub``, ``named_servers``, ``culling``.

``build(values, plan)`` sets the hub's addresses, database, cookie secret, crypt key, proxy,
named servers and the idle-culler service; ``check(values)`` has the cross-key rules.
Pure: values (schema defaults filled by ``values.load``) in, plan entries out. The address
rules (:func:`connect_host`, :func:`public_url`) are shared with ``afhub up`` and the demo
provider.
"""

from __future__ import annotations

import os
import sys

from .plan import SecretRef
from .problems import Problem

KEYS = ("hub", "named_servers", "culling")
J = "JupyterHub"


def connect_host(ip: str) -> str:
    """Where to connect to a server listening on ``ip`` (all interfaces -> loopback)."""
    return "127.0.0.1" if ip in ("", "0.0.0.0") else ip


def public_url(values: dict) -> str:
    """The hub's URL on this machine (``values`` with defaults filled)."""
    hub = values["hub"]
    return f"http://{connect_host(hub['ip'])}:{hub['port']}{hub['base_url']}"


def check(values: dict) -> list[Problem]:
    return []


def build(values: dict, plan) -> None:
    hub = values["hub"]
    if "crypt_key" in hub:
        crypt_key = SecretRef("hub.crypt_key", hub["crypt_key"], transform="key-list")
    else:
        crypt_key = SecretRef("hub.crypt_key", generated="crypt_key", transform="key-list")
    if hub.get("admin_users"):
        plan.set("Authenticator", "admin_users", set(hub["admin_users"]))
    if plan.deployment == "z2jh":
        # The chart owns addresses, proxy, database, cookie secret, crypt key and culling
        # (see z2jh.py, which renders those keys as chart values); afhub adds the rest.
        if "crypt_key" in hub:
            plan.set("CryptKeeper", "keys", crypt_key)
        return
    plan.set("CryptKeeper", "keys", crypt_key)
    # batch jobs outlive the hub: a restarted hub finds them in its database (spawner/batch/)
    _build_standalone(
        hub, plan, cleanup_servers=values["backend"]["type"] not in ("slurm", "htcondor")
    )
    ns = values["named_servers"]
    plan.set(J, "allow_named_servers", ns["enabled"])
    if ns["enabled"]:
        plan.set(J, "named_server_limit_per_user", ns["limit_per_user"])
    _build_culling(values["culling"], plan)


def _build_standalone(hub: dict, plan, cleanup_servers: bool = True) -> None:
    plan.set(J, "ip", hub["ip"])
    plan.set(J, "port", hub["port"])
    plan.set(J, "hub_ip", hub["hub_ip"])
    plan.set(J, "hub_port", hub["hub_port"])
    if hub.get("node_address"):  # JUPYTERHUB_API_URL of servers on other hosts (addresses.py)
        plan.set(J, "hub_connect_ip", hub["node_address"])
    plan.set("ConfigurableHTTPProxy", "api_url", f"http://127.0.0.1:{hub['proxy_api_port']}")
    plan.set(J, "base_url", hub["base_url"])
    if "db_url" in hub:
        plan.set(J, "db_url", SecretRef("hub.db_url", hub["db_url"]))
    else:
        plan.set(J, "db_url", "sqlite:///" + os.path.join(plan.data_dir, "jupyterhub.sqlite"))
    if "cookie_secret" in hub:
        secret = SecretRef("hub.cookie_secret", hub["cookie_secret"], transform="hex-bytes")
        plan.set(J, "cookie_secret", secret)
    else:
        plan.set(J, "cookie_secret_file", os.path.join(plan.data_dir, "jupyterhub_cookie_secret"))
    plan.set(J, "pid_file", os.path.join(plan.data_dir, "jupyterhub.pid"))
    plan.set(J, "concurrent_spawn_limit", hub["concurrent_spawn_limit"])
    plan.set(J, "log_level", hub["log_level"])
    plan.set(J, "cleanup_servers", cleanup_servers)
    if hub.get("default_url"):
        plan.set(J, "default_url", hub["default_url"])
    if hub.get("proxy_command"):  # else JupyterHub's default, configurable-http-proxy on PATH
        plan.set("ConfigurableHTTPProxy", "command", list(hub["proxy_command"]))
    plan.set("ConfigurableHTTPProxy", "pid_file", os.path.join(plan.data_dir, "proxy.pid"))
    plan.set("ConfigurableHTTPProxy", "debug", False)


def _build_culling(cull: dict, plan) -> None:
    if not cull["enabled"]:
        return
    cmd = [
        sys.executable,
        "-m",
        "jupyterhub_idle_culler",
        f"--timeout={cull['timeout']}",
        f"--cull-every={cull['every']}",
        f"--max-age={cull['max_age']}",
    ]
    if cull["users"]:
        cmd.append("--cull-users")
    plan.add_service({"name": "idle-culler", "command": cmd})
    scopes = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
    if cull["users"]:
        scopes.append("admin:users")
    plan.add_role({"name": "idle-culler", "scopes": scopes, "services": ["idle-culler"]})
