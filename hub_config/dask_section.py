"""Values -> hub config for Dask Gateway (section ``dask``).

Pure. ``build(values, plan)`` adds dask-gateway-server as a hub-managed service (run by
``python -m afhub.hub_config.gateway`` with its settings as JSON in the service
environment: no secrets in it, the gateway's own API token comes from the hub), the scopes it
needs (users and their servers' tokens may access it; the gateway itself may read users'
groups and servers, nothing else), and the ``DASK_GATEWAY__*`` settings that make the stock
``dask_gateway.Gateway()`` work with no arguments in every user server.
``check(values)`` reports cross-key problems.
"""

from __future__ import annotations

import json
import socket
import sys

from .problems import Problem

SERVICE = "dask-gateway"
ACCESS_SCOPE = f"access:services!service={SERVICE}"
# what the gateway may do at the hub: identify tokens (no scope needed), read users' groups
# for per-group limits and their servers to stop clusters whose owner's server stopped
GATEWAY_SCOPES = ["list:users", "read:users:name", "read:users:groups", "read:servers"]
SETTINGS_ENV = "AFHUB_DASK_SETTINGS"
BACKENDS = ("local", "slurm", "kubernetes")
KEYS = ("dask",)


def enabled(values: dict) -> bool:
    return bool((values.get("dask") or {}).get("enabled"))


def backend_kind(values: dict) -> str:
    dask = values.get("dask") or {}
    return dask.get("backend") or (values.get("backend") or {}).get("type", "local")


def service_prefix(values: dict) -> str:
    base = (values.get("hub") or {}).get("base_url", "/")
    return base.rstrip("/") + f"/services/{SERVICE}"


def public_hub_url(values: dict) -> str:
    from .hub_section import public_url

    return public_url(values)


def server_environment(values: dict) -> dict[str, str]:
    """``DASK_GATEWAY__*`` for user servers (dask config through the environment, as daskhub
    users know it): the gateway through the hub's proxy, schedulers through the gateway's TLS
    proxy, JupyterHub auth with the server's own API token; dashboards through the user's own
    server (it sets ``public_address`` from its base URL)."""
    dask = values["dask"]
    from afhub.server_ext.contract import dask_environment

    from . import addresses

    # servers may run on other hosts: hub.node_address names how they reach this one
    proxy = addresses.gateway_proxy_address(
        values, gateway_ip(values), socket.getfqdn(), dask.get("scheduler_port", 8786)
    )
    return dask_environment(
        address=addresses.proxy_url(values).rstrip("/") + f"/services/{SERVICE}",
        proxy_address=proxy,
        dashboards_proxied=True,  # afhub's gateway: each server proxies its user's dashboards
    )


def gateway_settings(values: dict, plan) -> dict:
    """What the gateway process needs (``hub_config/gateway/``): JSON-able, no secrets."""
    dask = values["dask"]
    backend = values.get("backend") or {}
    return {
        "dask": dask,
        "backend": backend_kind(values),
        "images": list(values.get("images") or []),
        # the spawn page's profiles: which images each user may run (dask_options)
        "profiles": list(values.get("profiles") or []),
        "default_prefix": _default_prefix(backend),
        "apptainer": _apptainer(backend),
        "gateway_ip": gateway_ip(values),
        "node_address": (values.get("hub") or {}).get("node_address") or "",
        "gpu_workers": gpu_workers(values),
        **owner_accounts(backend),
        # Slurm clients of the gateway (sbatch, squeue, scancel) use the hub's cluster
        "slurm_conf": _slurm_conf() if backend_kind(values) == "slurm" else "",
        "data_dir": plan.data_dir,
        "port": dask["port"],
        "scheduler_port": dask["scheduler_port"],
        "prefix": service_prefix(values),
        "server_check_interval": dask["server_check_interval"],
        "cluster_environment": cluster_environment(values),
    }


def gpu_workers(values: dict) -> dict:
    """``dask.slurm.gpu_workers`` with its GPU type translated as the spawner translates
    profiles' (``backend.slurm.gpu_types``; spawner/gpu_rules.py): ``gres_type`` is the Slurm
    GRES type GPU workers ask for."""
    g = dict(((values.get("dask") or {}).get("slurm") or {}).get("gpu_workers") or {})
    types = ((values.get("backend") or {}).get("slurm") or {}).get("gpu_types") or {}
    if g.get("type"):
        g["gres_type"] = types.get(g["type"], g["type"])
    return g


def cluster_environment(values: dict) -> dict[str, str]:
    """What every scheduler and worker gets on top of its backend's environment: the data
    contract (CA trust, endpoints: ``data.environment``) and, where servers get a
    data-access token, how long a scheduler holds joining workers until the token is there
    (``contract.DASK_TOKEN_WAIT``). Paths and numbers only, never a token."""
    from afhub.authenticator.auth_section import tokens_enabled
    from afhub.server_ext import contract

    from . import data

    env = dict(data.environment(values))
    if tokens_enabled(values):
        env[contract.DASK_TOKEN_WAIT] = str(contract.DEFAULT_DASK_TOKEN_WAIT)
    return env


def owner_accounts(backend: dict) -> dict:
    """Which system account a cluster runs as: the one the owner's servers run as, named by
    ``spawner.accounts.system_username`` with the backend's ``account_prefix`` (the same
    name on every backend). Local backend: per-user accounts as the spawner resolves
    ``accounts`` (with the gateway's euid, which is the hub's); batch backends: always the
    user's (site-managed) account, and their servers outlive the hub."""
    kind = backend.get("type", "local")
    if kind in ("slurm", "htcondor"):
        prefix = (backend.get(kind) or {}).get("account_prefix", "")
        return {
            "accounts": "system",
            "account_prefix": prefix,
            "account_records": False,  # site-managed accounts carry no afhub owner record
            "servers_outlive_hub": True,
        }
    local = backend.get("local") or {}
    return {
        "accounts": local.get("accounts", "auto"),
        "account_prefix": local.get("account_prefix", "afhub-"),
        "account_records": True,  # afhub creates them, recording the hub user (accounts.py)
        "home_root": local.get("home_root", ""),  # single-user mode's owner file is there
        "servers_outlive_hub": False,
    }


def _default_prefix(backend: dict) -> str:
    """The environment clusters run without a catalogue image: where servers run without one
    (a batch backend's ``environment``, the local backend's ``default_prefix``)."""
    kind = backend.get("type", "local")
    if kind in ("slurm", "htcondor") and (backend.get(kind) or {}).get("environment"):
        return backend[kind]["environment"]
    return (backend.get("local") or {}).get("default_prefix") or _server_env()


def _apptainer(backend: dict) -> dict | None:
    """A batch backend's Apptainer settings (its servers run images with them), else None."""
    from afhub.spawner.translations.apptainer import ApptainerSettings

    kind = backend.get("type", "local")
    if kind not in ("slurm", "htcondor"):
        return None
    app = ApptainerSettings.from_values((backend.get(kind) or {}).get("apptainer"))
    return {"command": app.command, "binds": list(app.binds), "extra_args": list(app.extra_args)}


def gateway_ip(values: dict) -> str:
    """Where the gateway's proxies (HTTP ``dask.port``, schedulers' TLS ``dask.scheduler_port``)
    listen: loopback, unless Slurm jobs and servers on other nodes must reach them
    (``dask.slurm.gateway_ip``)."""
    if backend_kind(values) != "slurm":
        return "127.0.0.1"
    return (values["dask"].get("slurm") or {}).get("gateway_ip") or "127.0.0.1"


def _gateway_host(values: dict) -> str:
    """The address the hub's proxy reaches the gateway at."""
    ip = gateway_ip(values)
    return "127.0.0.1" if ip == "0.0.0.0" else ip


def _slurm_conf() -> str:
    """``$SLURM_CONF`` of the hub process (a hub-managed service does not inherit it)."""
    import os

    return os.environ.get("SLURM_CONF", "")


def _server_env() -> str:
    """Where user servers run when ``backend.local.default_prefix`` is unset, found exactly as
    the local spawner finds it (``$AFHUB_SERVER_ENV`` of the hub process, ...): the one
    environment read here, so that workers run where notebooks run. The gateway cannot look
    itself: a hub-managed service does not inherit the hub's environment."""
    from afhub.spawner.local import server_environment

    return server_environment()


def build(values: dict, plan) -> None:
    if not enabled(values) or plan.deployment == "z2jh":
        # Zero to JupyterHub: the dask-gateway chart runs the gateway (afhub z2jh renders it)
        return
    plan.add_service(
        {
            "name": SERVICE,
            "url": f"http://{_gateway_host(values)}:{values['dask']['port']}",
            "command": [sys.executable, "-m", "afhub.hub_config.gateway"],
            "environment": {
                SETTINGS_ENV: json.dumps(gateway_settings(values, plan), sort_keys=True)
            },
            "display": False,
        }
    )
    plan.add_role({"name": SERVICE, "scopes": list(GATEWAY_SCOPES), "services": [SERVICE]})
    plan.grant("user", ACCESS_SCOPE)
    plan.add_server_token_scope(ACCESS_SCOPE)
    for name, value in server_environment(values).items():
        plan.add_env(name, value)


def check(values: dict) -> list[Problem]:
    dask = values.get("dask") or {}
    if not dask.get("enabled"):
        return []
    problems: list[Problem] = []
    kind = backend_kind(values)
    if kind not in BACKENDS:
        problems.append(
            Problem(
                "dask.backend", f"Dask Gateway cannot run on the {kind} backend; set dask.backend"
            )
        )
    images = {img.get("name") for img in values.get("images") or [] if isinstance(img, dict)}
    for i, name in enumerate(dask.get("images") or []):
        if name not in images:
            known = ", ".join(sorted(n for n in images if n)) or "none"
            problems.append(
                Problem(f"dask.images[{i}]", f"unknown image {name!r}; images: {known}")
            )
    for key, cap in (
        ("worker_cores", "max_worker_cores"),
        ("worker_memory", "max_worker_memory"),
        ("worker_gpus", "max_worker_gpus"),
    ):
        from afhub.server_ext.dask_options import DEFAULTS

        if dask.get(key, DEFAULTS[key]) > dask.get(cap, DEFAULTS[cap]):
            problems.append(
                Problem(
                    f"dask.{key}",
                    f"the default ({dask.get(key, DEFAULTS[key])}) is above dask.{cap} "
                    f"({dask.get(cap, DEFAULTS[cap])})",
                )
            )
    hub = values.get("hub") or {}
    ports = {
        "dask.port": dask.get("port", 8002),
        "dask.scheduler_port": dask.get("scheduler_port", 8786),
    }
    taken = {  # ports left unset are picked free by afhub up
        "hub.port": hub.get("port"),
        "hub.hub_port": hub.get("hub_port"),
        "hub.proxy_api_port": hub.get("proxy_api_port"),
    }
    for key, port in ports.items():
        for other, p in taken.items():
            if port and p and port == p:
                problems.append(Problem(key, f"port {port} is also {other}"))
    if ports["dask.port"] and ports["dask.port"] == ports["dask.scheduler_port"]:
        problems.append(Problem("dask.scheduler_port", "must differ from dask.port"))
    gpu_type = ((dask.get("slurm") or {}).get("gpu_workers") or {}).get("type")
    if gpu_type:
        from afhub.spawner.gpu_rules import type_problem  # the same rule as profiles'

        types = ((values.get("backend") or {}).get("slurm") or {}).get("gpu_types") or {}
        message = type_problem(gpu_type, types, "backend.slurm.gpu_types")
        if message:
            problems.append(Problem("dask.slurm.gpu_workers.type", message))
    if (dask.get("slurm") or {}).get("gpu_workers") and not dask.get(
        "max_worker_gpus", any(e.get("max_worker_gpus") for e in dask.get("limits") or [])
    ):
        problems.append(
            Problem(
                "dask.slurm.gpu_workers",
                "no user may ask for GPU workers: set dask.max_worker_gpus (or in dask.limits)",
            )
        )
    for i, net in enumerate((dask.get("slurm") or {}).get("node_networks") or []):
        import ipaddress

        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError as e:
            problems.append(Problem(f"dask.slurm.node_networks[{i}]", f"not a network: {e}"))
    return problems


_GROUP_KEYS = ("allowed_groups", "admin_groups", "groups")


def _groups_used(node, path: str = "") -> set[str]:
    """Every group named outside ``dask.limits``: ``allowed_groups`` of auth, images, profiles,
    options and choices, ``auth.admin_groups``, the dev provider's users' ``groups``."""
    out: set[str] = set()
    if path == "dask.limits":
        return out
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _GROUP_KEYS and isinstance(value, list):
                out.update(g for g in value if isinstance(g, str))
            else:
                out |= _groups_used(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for item in node:
            out |= _groups_used(item, path)
    return out


def warn(values: dict) -> list[Problem]:
    """``dask.limits`` entries naming groups nothing else in the file uses (a typo of a group
    would silently give nobody the larger limits). A warning: the identity provider may send
    groups used for Dask limits only."""
    dask = values.get("dask") or {}
    if not dask.get("enabled") or not dask.get("limits"):
        return []
    used = _groups_used(values)
    out = []
    for i, entry in enumerate(dask["limits"]):
        for j, group in enumerate(entry.get("allowed_groups") or []):
            if group not in used:
                from .problems import did_you_mean

                out.append(
                    Problem(
                        f"dask.limits[{i}].allowed_groups[{j}]",
                        f"group {group!r} is used nowhere else in this file (auth, images, "
                        f"profiles){did_you_mean(group, used)}; check its spelling against the "
                        "identity provider's groups",
                    )
                )
    return out
