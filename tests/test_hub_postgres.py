"""The embedded default on a PostgreSQL hub database, crashed piece by piece.

A real PostgreSQL (``tests/postgres.py``: Debian's server in its own data directory on a free
loopback port, password authentication) holds the hub's database; ``hub.db_url`` comes from
the environment (``{env: ...}``), so the password is in no file, argv or log. With 5 servers
(3 users, 2 of them with a named second server) and 2 Dask clusters running, the hub, then the
proxy, then the gateway, then all three are SIGKILLed. After each: every server answers through
the proxy with the same process and start time (none started twice), the saved notebooks are
intact, each server's token file keeps getting a later expiry, and each user still has exactly
their one cluster (one scheduler process each).
"""

from __future__ import annotations

import base64
import json
import os
import signal

import psutil
import pytest
import requests
from facility import Facility, example_values, process_tree_pids, wait_for
from postgres import PostgresServer, pg_bindir

pytestmark = pytest.mark.integration

LIFETIME = 30  # s: the demo provider's access tokens
MARGIN = 10  # s before expiry a server renews
SERVERS = [("alice", ""), ("alice", "second"), ("bob", ""), ("bob", "second"), ("carol", "")]
CLUSTER_USERS = ("alice", "bob")
ENV_VAR = "AFHUB_TEST_HUB_DB_URL"
NOTEBOOK = {
    "cells": [{"cell_type": "markdown", "metadata": {}, "source": "survives crashes"}],
    "metadata": {},
    "nbformat": 4,
    "nbformat_minor": 5,
}


@pytest.fixture(scope="module")
def pg():
    if pg_bindir() is None:
        from slurm import require

        require("PostgreSQL is not installed (make system-deps installs it)")
    server = PostgresServer().start()
    yield server
    server.stop()


def _values(pg: PostgresServer) -> dict:
    values = example_values("local")
    values["hub"]["db_url"] = {"env": ENV_VAR}
    values["auth"]["dev"]["token_lifetime"] = LIFETIME
    values["tokens"] = {"refresh_margin": MARGIN}
    values["culling"] = {"enabled": False}
    values["named_servers"] = {"enabled": True, "limit_per_user": 2}
    return values


@pytest.fixture(scope="module")
def fac(pg, tmp_path_factory):
    url = pg.url.replace(f"{pg.role}@", f"{pg.role}:{pg.password}@")
    os.environ[ENV_VAR] = url  # afhub up and the hub inherit it; nothing writes it down
    facility = Facility(_values(pg), tmp_path_factory.mktemp("postgres-facility"))
    try:
        facility.start(timeout=120)
        yield facility
    finally:
        facility.stop()
        os.environ.pop(ENV_VAR, None)


def admin_model(fac: Facility, user: str, name: str) -> dict:
    """The server's model with its spawner state (admins only: the pid)."""
    r = fac.admin_api("GET", f"users/{user}")
    r.raise_for_status()
    return r.json()["servers"][name]


def hub_api_url(fac: Facility) -> str:
    """This facility's hub API (``http://127.0.0.1:PORT/hub/api``), as its servers know it.

    ``afhub up`` picks the port once and keeps it across hub restarts."""
    line = next(x for x in fac.log_text().splitlines() if "internal ports: hub API " in x)
    return f"http://{line.split('internal ports: hub API ', 1)[1].split(',', 1)[0]}/hub/api"


def singleuser_processes(fac: Facility) -> dict[tuple[str, str], list[int]]:
    """(user, server name) -> pids of this facility's running single-user servers (the
    outermost one of each).

    Every process on the machine is looked at (a server started twice might have escaped the
    facility's process tree), but only those that talk to this facility's hub count: other
    facilities on the machine (other test sessions, benches) have demo users of the same names.
    """
    api = hub_api_url(fac)
    found: dict[tuple[str, str], list[int]] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            env = p.environ()
            if env.get("AFHUB_DATA_DIR"):
                continue  # the hub's own processes
            if "JUPYTERHUB_SERVICE_URL" not in env or env.get("JUPYTERHUB_SERVICE_NAME"):
                continue
            if env.get("JUPYTERHUB_API_URL") != api:
                continue
            if env.get("JUPYTERHUB_USER") not in {u for u, _ in SERVERS}:
                continue
            if "ipykernel" in " ".join(p.info["cmdline"] or []):
                continue
            parent_env = p.parent().environ() if p.parent() else {}
            if parent_env.get("JUPYTERHUB_SERVICE_URL") == env["JUPYTERHUB_SERVICE_URL"]:
                continue
            key = (env["JUPYTERHUB_USER"], env.get("JUPYTERHUB_SERVER_NAME", ""))
            found.setdefault(key, []).append(p.pid)
        except (psutil.Error, OSError):
            continue
    return found


def describe(pid: int) -> str:
    """``pid [account] ppid=... started=... cmdline``: enough to tell two servers apart."""
    try:
        p = psutil.Process(pid)
        cmd = " ".join(p.cmdline())[:160]
        return f"{pid} [{p.username()}] ppid={p.ppid()} started={p.create_time():.1f} {cmd}"
    except psutil.Error:
        return f"{pid} (gone)"


def facility_pids(fac: Facility, needle: str, service: str | None = None) -> list[int]:
    out = []
    for pid in process_tree_pids(fac.proc.pid):
        try:
            p = psutil.Process(pid)
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if needle and needle not in " ".join(p.cmdline()):
                continue
            if service is not None:
                env = p.environ()
                if env.get("JUPYTERHUB_SERVICE_NAME") != service:
                    continue
                if p.parent().environ().get("JUPYTERHUB_SERVICE_NAME") == service:
                    continue
            out.append(pid)
        except psutil.Error:
            continue
    return out


def token_expiry(path: str) -> int:
    with open(path) as f:
        payload = f.read().strip().split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"]


def scheduler_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if "dask" in cmd and " scheduler" in cmd:
                name = p.environ().get("DASK_GATEWAY_CLUSTER_NAME")
                if name:
                    counts[name] = counts.get(name, 0) + 1
        except psutil.Error:
            continue
    return counts


@pytest.fixture(scope="module")
def running(fac):
    """Sessions, servers (pid, started), notebook saved, clusters, token files: the state that
    every crash below must leave as it was."""
    sessions = {u: fac.login(u) for u in {u for u, _ in SERVERS}}
    for user, name in SERVERS:
        r = sessions[user].spawn(server_name=name)
        assert r.status_code in (201, 202), r.text
    servers = {}
    for user, name in SERVERS:
        hs = sessions[user]
        hs.wait_ready(name, timeout=240)
        model = admin_model(fac, user, name)
        r = hs.server_api("PUT", "api/contents/crash.ipynb", name,
                          json={"type": "notebook", "content": NOTEBOOK})  # fmt: skip
        assert r.status_code in (200, 201), r.text
        status = hs.server_api("GET", "afhub/api/token", name).json()
        servers[(user, name)] = {
            "pid": model["state"]["pid"],
            "started": model["started"],
            "token_file": status["path"],
        }
    clusters = {}
    for user in CLUSTER_USERS:
        r = sessions[user].server_api(
            "POST", "afhub/api/dask/clusters", json={"options": {}, "workers": 1}, timeout=240
        )
        assert r.status_code == 201, r.text
        clusters[user] = r.json()["name"]
    return {"sessions": sessions, "servers": servers, "clusters": clusters}


def check_everything(fac: Facility, running: dict, what: str) -> None:
    sessions, servers, clusters = running["sessions"], running["servers"], running["clusters"]
    wait_for(lambda: answers(fac.url + "hub/health"), 120, what=f"the hub via the proxy ({what})")
    # every server answers through the (possibly new) proxy, same process, same start
    for (user, name), before in servers.items():
        hs = sessions[user]
        wait_for(
            lambda hs=hs, name=name: (m := hs.server_model(name)) and m.get("ready"),
            120,
            what=f"{user}/{name} ready after {what}",
        )
        model = admin_model(fac, user, name)
        assert model["state"]["pid"] == before["pid"], f"{user}/{name} restarted after {what}"
        assert model["started"] == before["started"], f"{user}/{name} started again ({what})"
        r = wait_for(
            lambda hs=hs, name=name: (
                (r := hs.server_api("GET", "api/contents/crash.ipynb", name)).status_code == 200
                and r
            ),
            90,
            what=f"{user}/{name} reachable after {what}",
        )
        assert r.json()["content"]["cells"][0]["source"] == "survives crashes"
    procs = singleuser_processes(fac)
    assert {k: len(v) for k, v in procs.items()} == {k: 1 for k in servers}, (
        what,
        {k: [describe(pid) for pid in v] for k, v in procs.items()},
    )
    assert {k: v[0] for k, v in procs.items()} == {k: s["pid"] for k, s in servers.items()}
    # clusters: the same one per user, neither lost nor duplicated
    for user, cluster in clusters.items():
        listed = wait_for(
            lambda user=user: (
                (r := sessions[user].server_api("GET", "afhub/api/dask/clusters")).status_code
                == 200
                and r.json()["clusters"]
            ),
            120,
            what=f"{user}'s clusters listed after {what}",
        )
        assert [c["name"] for c in listed] == [cluster], (what, listed)
    counts = scheduler_counts()
    assert {c: counts.get(c, 0) for c in clusters.values()} == {c: 1 for c in clusters.values()}
    # renewal continues: each token file gets a later expiry than it had now
    expiries = {k: token_expiry(s["token_file"]) for k, s in servers.items()}
    wait_for(
        lambda: all(token_expiry(s["token_file"]) > expiries[k] for k, s in servers.items()),
        LIFETIME + 60,
        what=f"every token file renewed after {what}",
    )


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def kill(pids: list[int]) -> None:
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def proxy_pids(fac):
    return facility_pids(fac, "configurable-http-proxy")


def gateway_pids(fac):
    return facility_pids(fac, "", service="dask-gateway")


def test_database_is_postgresql_and_holds_the_servers(pg, fac, running):
    rows = pg.query("SELECT name FROM users ORDER BY name")
    assert [r[0] for r in rows] == ["alice", "bob", "carol"]
    assert len(pg.query("SELECT id FROM spawners WHERE server_id IS NOT NULL")) == len(SERVERS)
    assert not (fac.data_dir / "jupyterhub.sqlite").exists()


def test_hub_killed(fac, running):
    old = fac.hub_pid()
    restarts = fac.log_text().count("hub is back")
    kill([old])
    wait_for(lambda: fac.log_text().count("hub is back") > restarts, 120, what="hub restart")
    check_everything(fac, running, "the hub was killed")


def test_proxy_killed(fac, running):
    old = proxy_pids(fac)
    kill(old)
    wait_for(lambda: (p := proxy_pids(fac)) and not set(p) & set(old), 60, what="a new proxy")
    check_everything(fac, running, "the proxy was killed")


def test_gateway_killed(fac, running):
    old = gateway_pids(fac)
    kill(old)
    wait_for(lambda: (p := gateway_pids(fac)) and not set(p) & set(old), 60, what="new gateway")
    check_everything(fac, running, "the gateway was killed")


def test_hub_proxy_and_gateway_killed_together(fac, running):
    old = [fac.hub_pid(), *proxy_pids(fac), *gateway_pids(fac)]
    restarts = fac.log_text().count("hub is back")
    kill(old)
    wait_for(lambda: fac.log_text().count("hub is back") > restarts, 120, what="hub restart")
    check_everything(fac, running, "hub, proxy and gateway were killed")


def test_the_database_password_is_in_no_argv_log_or_server(pg, fac, running):
    secret = pg.password
    assert secret not in fac.log_text()
    for path in fac.data_dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 10_000_000:
            assert secret.encode() not in path.read_bytes(), path
    for p in psutil.process_iter(["cmdline"]):
        try:
            assert secret not in " ".join(p.info["cmdline"] or []), p.pid
        except psutil.Error:
            continue
    for user, name in SERVERS:
        pid = running["servers"][(user, name)]["pid"]
        env = psutil.Process(pid).environ()
        assert not any(secret in v for v in env.values()), (user, name)
