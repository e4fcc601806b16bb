"""*Pure* address rules: which addresses a cluster reports the gateway may connect to.

A scheduler's heartbeat says where its scheduler, API and dashboard listen, whatever its
owner's code makes it say; the gateway connects only to IP addresses inside the backend's
``allowed_networks`` (loopback for local clusters; the Slurm nodes' networks).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def address_problem(what: str, address: str, networks) -> str | None:
    """Pure: why ``address`` (``tls://10.1.2.3:8786``, ``http://[::1]:8787``), which a
    cluster reported as its ``what``, is not one the gateway may connect to, or None. The host
    must be an IP address (a name could resolve elsewhere later) inside one of ``networks``."""
    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return f"its {what} address {address!r} is not an IP address and port"
    if not port:
        return f"its {what} address {address!r} has no port"
    if not any(ip in ipaddress.ip_network(n, strict=False) for n in networks):
        allowed = ", ".join(networks) or "none"
        return f"its {what} address {address!r} is outside the allowed networks ({allowed})"
    return None


def reported_address_problems(msg: dict, networks) -> list[str]:
    """Pure: what is wrong with the addresses of a scheduler's heartbeat ``msg`` (the
    dashboard's may be empty: no dashboard)."""
    out = []
    for what in ("scheduler", "api", "dashboard"):
        address = msg.get(f"{what}_address") or ""
        if what == "dashboard" and not address:
            continue
        problem = address_problem(what, address, networks)
        if problem:
            out.append(problem)
    return out


def host_networks() -> list[str]:
    """The networks of this host's interfaces, loopback and link-local excluded: where the
    Slurm nodes' schedulers are by default (``dask.slurm.node_networks`` narrows it)."""
    import psutil

    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in (socket.AF_INET, socket.AF_INET6) or not a.netmask:
                continue
            try:
                net = ipaddress.ip_network(f"{a.address.split('%')[0]}/{a.netmask}", strict=False)
            except ValueError:
                continue
            if not (net.is_loopback or net.is_link_local) and str(net) not in out:
                out.append(str(net))
    return out


def node_networks(listen_ip: str) -> list[str]:
    """The default ``allowed_networks`` of Slurm clusters: ``listen_ip`` itself when it is
    one address (jobs on this host only, e.g. ``127.0.0.1``), else this host's networks."""
    if listen_ip not in WILDCARD_HOSTS:
        return [str(ipaddress.ip_network(listen_ip))]
    return host_networks()
