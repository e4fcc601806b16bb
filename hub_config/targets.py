"""What each deployment target needs beyond a valid values file.

A values file can be valid and still not run where it is deployed: under Zero to JupyterHub the
chart owns the database and cookie secret (keys set here would be ignored), the hub cannot derive
its public URL, and the demo provider does not exist. ``target_problems(values, target)`` names
those keys, as :class:`Problem` s, so ``afhub check --target z2jh`` reports them together with the
schema and cross-key problems instead of ``afhub z2jh`` finding them one run later.

Pure: validated values in, problems out. Targets:

- ``standalone``: ``afhub up`` or ``jupyterhub -f`` on one machine (or a batch site's login node);
- ``z2jh``: inside the Zero to JupyterHub chart's hub pod (``afhub z2jh`` renders the chart values).
"""

from __future__ import annotations

from .values import Problem

TARGETS = ("standalone", "z2jh")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _standalone(values: dict) -> list[Problem]:
    problems = []
    auth = values.get("auth") or {}
    ip = (values.get("hub") or {}).get("ip", "127.0.0.1")
    if (
        auth
        and auth.get("provider") != "dev"
        and ip not in LOOPBACK
        and not auth.get("callback_url")
    ):
        problems.append(
            Problem(
                "auth.callback_url",
                f"missing required key when the hub listens on {ip!r}: the provider must send "
                "browsers back to the public URL, e.g. https://af.example.org/hub/oauth_callback",
            )
        )
    # servers on other hosts (batch nodes, pods of a hub outside the cluster): what they must
    # reach is neither loopback nor a wildcard (addresses.py)
    from .addresses import reach_problems

    problems.extend(reach_problems(values, "standalone"))
    return problems


def default_target(values: dict) -> str | None:
    """The target ``afhub check`` assumes without ``--target``: a Slurm or HTCondor site can
    only run standalone (``jupyterhub -f`` on its submit host), so its checks run."""
    kind = (values.get("backend") or {}).get("type", "local") if isinstance(values, dict) else ""
    return "standalone" if kind in ("slurm", "htcondor") else None


def _z2jh(values: dict) -> list[Problem]:
    problems = []
    backend = (values.get("backend") or {}).get("type", "local")
    if backend != "kubernetes":
        problems.append(
            Problem("backend.type", f"must be kubernetes under Zero to JupyterHub, got {backend!r}")
        )
    auth = values.get("auth") or {}
    if auth.get("provider") == "dev":
        problems.append(Problem("auth.provider", "the dev provider only runs with `afhub up`"))
    if auth and not auth.get("callback_url"):
        problems.append(
            Problem(
                "auth.callback_url",
                "missing required key under Zero to JupyterHub (the hub's public URL + "
                "hub/oauth_callback, e.g. https://af.example.org/hub/oauth_callback)",
            )
        )
    hub = values.get("hub") or {}
    if "cookie_secret" in hub:
        problems.append(
            Problem("hub.cookie_secret", "set hub.cookieSecret in the chart values instead")
        )
    if "db_url" in hub:
        problems.append(
            Problem(
                "hub.db_url",
                "the chart owns the hub database under Zero to JupyterHub; set hub.db in the "
                "chart values instead",
            )
        )
    return problems


_CHECKS = {"standalone": _standalone, "z2jh": _z2jh}


def target_problems(values: dict, target: str) -> list[Problem]:
    """Problems that keep valid ``values`` from running on ``target`` (one of :data:`TARGETS`)."""
    if target not in _CHECKS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    return _CHECKS[target](values)


__all__ = ["TARGETS", "default_target", "target_problems"]
