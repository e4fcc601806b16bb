"""*Pure* address rules: how other hosts reach this one, and which files cannot work across hosts.

``hub.node_address`` is the one place a values file names how batch nodes (or pods) reach the
hub host; every address afhub hands to servers, Dask schedulers and workers is built from it
here (:func:`hub_api_host`, :func:`proxy_url`, :func:`gateway_proxy_address`,
:func:`gateway_api_url`). :func:`reach_problems` is what ``afhub check`` refuses for a
deployment whose servers run on other hosts: an address another host must reach that is
loopback or a wildcard, each problem naming the key to set.

What must not live here: listening addresses of ``afhub up`` (``hub_section``), the gateway's
network checks of reported scheduler addresses (``gateway/networks.py``).
"""

from __future__ import annotations

import ipaddress

from .problems import Problem

BATCH = ("slurm", "htcondor")
WILDCARDS = ("", "0.0.0.0", "::", "*")
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost`` (and ``*.localhost``)."""
    host = (host or "").strip().lower().rstrip(".")
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    return (host or "").strip() in WILDCARDS


def _ip(host: str):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def node_address(values: dict) -> str:
    """``hub.node_address`` (empty: servers and jobs on this host only)."""
    return ((values.get("hub") or {}).get("node_address") or "").strip()


def _local_connect(ip: str) -> str:
    return "127.0.0.1" if is_wildcard(ip) else ip


def hub_api_host(values: dict) -> str:
    """The host servers are told the hub API is at (``JupyterHub.hub_connect_ip``)."""
    return node_address(values) or _local_connect((values.get("hub") or {}).get("hub_ip", ""))


def proxy_url(values: dict) -> str:
    """The public proxy's URL as servers on other hosts reach it (``node_address``), else as
    this host reaches it (``hub.ip``; all interfaces -> loopback)."""
    hub = values.get("hub") or {}
    host = node_address(values) or _local_connect(hub.get("ip", "127.0.0.1"))
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{hub.get('port', 8000)}{hub.get('base_url', '/')}"


def gateway_host(values: dict, gateway_ip: str, fqdn: str) -> str:
    """Where servers and schedulers reach the gateway's proxies: ``node_address``, else the
    listening address (``fqdn``, this host's name, for all interfaces)."""
    return node_address(values) or (fqdn if is_wildcard(gateway_ip) else gateway_ip)


def gateway_proxy_address(values: dict, gateway_ip: str, fqdn: str, port: int) -> str:
    """``DASK_GATEWAY__PROXY_ADDRESS``: the gateway's TLS proxy for schedulers."""
    return f"gateway://{gateway_host(values, gateway_ip, fqdn)}:{port}"


def gateway_api_url(host: str, port: int, prefix: str) -> str:
    """The gateway API URL schedulers in Slurm jobs call."""
    return f"http://{host}:{port}{prefix}/api"


def multi_host(values: dict, target: str | None) -> bool:
    """Whether servers run on other hosts than the hub: batch backends always, Kubernetes when
    the hub runs outside the cluster (``--target standalone``)."""
    kind = (values.get("backend") or {}).get("type", "local")
    return kind in BATCH or (kind == "kubernetes" and target == "standalone")


def _listen_problem(key: str, ip: str, node: str, what: str) -> Problem | None:
    if is_loopback(ip):
        return Problem(
            key,
            f"{ip!r} is loopback, but {what} from other hosts: set {key} to this host's "
            f"address on their network ({node or 'hub.node_address'}) or 0.0.0.0",
        )
    node_ip, own = _ip(node), _ip(ip)
    if node_ip is not None and own is not None and not is_wildcard(ip) and own != node_ip:
        return Problem(
            key,
            f"listens on {ip} but hub.node_address tells the nodes {node}: set {key} to "
            f"{node} or 0.0.0.0",
        )
    return None


def reach_problems(values: dict, target: str | None) -> list[Problem]:
    """Problems of a deployment whose servers run on other hosts (:func:`multi_host`): every
    address another host must reach is set, neither loopback nor a wildcard, and what listens
    can be reached at ``hub.node_address``. Values with defaults filled or not."""
    if not multi_host(values, target):
        return []
    kind = (values.get("backend") or {}).get("type", "local")
    hub = values.get("hub") or {}
    node = node_address(values)
    where = "batch jobs" if kind in BATCH else "pods"
    problems: list[Problem] = []
    if not node:
        problems.append(
            Problem(
                "hub.node_address",
                f"missing: servers run in {where} on other hosts and reach the hub API, the "
                "proxy and the Dask gateway at this host's name on their network; set it, "
                "e.g. hub.af.example.org",
            )
        )
    elif is_loopback(node) or is_wildcard(node):
        kind_of = "loopback" if is_loopback(node) else "a wildcard"
        problems.append(
            Problem(
                "hub.node_address",
                f"{node!r} is {kind_of}: servers in {where} on other hosts cannot reach the "
                "hub there; set this host's name or address on their network",
            )
        )
    checks = [("hub.hub_ip", hub.get("hub_ip", "127.0.0.1"), "servers call the hub API here")]
    dask = values.get("dask") or {}
    dask_kind = dask.get("backend") or kind
    if dask.get("enabled") and kind in BATCH:
        # DASK_GATEWAY__ADDRESS goes through the public proxy
        checks.append(
            ("hub.ip", hub.get("ip", "127.0.0.1"), "notebooks reach the Dask gateway here")
        )
    if dask.get("enabled") and dask_kind == "slurm":
        s = dask.get("slurm") or {}
        checks.append(
            (
                "dask.slurm.gateway_ip",
                s.get("gateway_ip") or "127.0.0.1",
                "schedulers and notebooks reach the gateway here",
            )
        )
        listen = s.get("listen_ip", "0.0.0.0")
        if is_loopback(listen):
            problems.append(
                Problem(
                    "dask.slurm.listen_ip",
                    f"{listen!r} is loopback: the gateway and workers on other nodes connect "
                    "to schedulers there; set 0.0.0.0 or the nodes' address",
                )
            )
    for key, ip, who in checks:
        p = _listen_problem(key, ip, node, who)
        if p is not None:
            problems.append(p)
    b = (values.get("backend") or {}).get(kind) or {}
    if kind in BATCH and is_loopback(b.get("server_ip", "0.0.0.0")):
        problems.append(
            Problem(
                f"backend.{kind}.server_ip",
                f"{b['server_ip']!r} is loopback: the hub on another host connects to servers "
                "there; set 0.0.0.0 or leave it unset",
            )
        )
    for name, addr in (b.get("node_addresses") or {}).items():
        if is_loopback(addr) or is_wildcard(addr):
            problems.append(
                Problem(
                    f"backend.{kind}.node_addresses.{name}",
                    f"{addr!r} is not an address of {name} the hub can connect to",
                )
            )
    return problems


def up_override_problems(values: dict, ip: str | None, port: int | None) -> list[Problem]:
    """``afhub up --ip/--port`` against a values file meant for more than one host
    (``hub.node_address`` set, or servers in batch jobs or pods): the file's ``hub.ip`` and
    ``hub.port`` are what nodes and the chart are told, so a flag that changes them is refused,
    naming the key to set instead. A flag equal to the file's value (defaults: 127.0.0.1, 8000)
    changes nothing and passes; a file for this host alone (the embedded default) takes both."""
    kind = (values.get("backend") or {}).get("type", "local")
    if node_address(values):
        why = "hub.node_address is set"
    elif kind in BATCH or kind == "kubernetes":
        why = f"backend.type is {kind}"
    else:
        return []
    hub = values.get("hub") or {}
    problems = []
    for flag, key, given, current in (
        ("--ip", "hub.ip", ip, hub.get("ip", "127.0.0.1")),
        ("--port", "hub.port", port, hub.get("port", 8000)),
    ):
        if given is None or str(given) == str(current):
            continue
        problems.append(
            Problem(
                key,
                f"afhub up {flag} {given} would replace {key} ({current}) of a values file for "
                f"more than one host ({why}): other hosts are told the file's address; set "
                f"{key} in the file instead of passing {flag}",
            )
        )
    return problems


__all__ = [
    "gateway_api_url",
    "gateway_host",
    "gateway_proxy_address",
    "hub_api_host",
    "is_loopback",
    "is_wildcard",
    "multi_host",
    "node_address",
    "proxy_url",
    "reach_problems",
    "up_override_problems",
]
