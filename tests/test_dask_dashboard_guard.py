"""Schedulers answer only their owner's relay, and the gateway connects only where it should.

- The dashboard guard (``server_ext/dask_dashboard_guard.py``, preloaded into schedulers and
  workers by the gateway's commands): a real ``dask scheduler`` of the server environment,
  started with the command the gateway builds, refuses plain requests (from root without the
  secret, and from another real account, ``nobody``) for pages, JSON routes and Bokeh's
  WebSocket, serves the same pages with the cluster's secret, keeps ``/health``, and has the
  secret in no argument, environment variable or log line.
- Addresses a scheduler reports (``hub_config/gateway/networks.py`` ``address_problem``): tables.
- The whole path (the relay rendering the owner's dashboard, bob's account refused, workers on
  loopback, a scheduler reporting an address outside loopback stopped) is in
  ``test_dask_integration.py``.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess

import pytest
from afhub.hub_config.gateway.clusters import GUARD_PRELOAD, with_guard
from afhub.hub_config.gateway.networks import (
    address_problem,
    node_networks,
    reported_address_problems,
)
from afhub.hub_config.gateway.process import gateway_config
from afhub.server_ext import contract
from afhub.server_ext.dask_dashboard import upstream_headers
from afhub.server_ext.dask_dashboard_guard import admitted
from facility import wait_for
from tornado.httputil import HTTPHeaders

SERVER_ENV = os.environ.get("AFHUB_SERVER_ENV") or "/opt/afhub/envs/analysis"
HEADER = contract.DASK_DASHBOARD_SECRET_HEADER


# -- pure parts ----------------------------------------------------------------------------------


def test_the_secret_is_derived_from_the_clusters_key_alone():
    key = "-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"
    secret = contract.dask_dashboard_secret(key)
    assert secret == contract.dask_dashboard_secret(key.encode())  # the file and the DB
    assert secret == contract.dask_dashboard_secret(key.rstrip("\n"))  # as the launcher writes
    assert secret != contract.dask_dashboard_secret(key.replace("abc", "abd"))
    assert len(secret) == 64 and secret.isalnum() and "abc" not in secret
    with pytest.raises(ValueError):
        contract.dask_dashboard_secret(b"  \n")


@pytest.mark.parametrize(
    "path, headers, secret, expected",
    [
        ("/status", {}, "s3cr3t", False),
        ("/status", {HEADER: "s3cr3t"}, "s3cr3t", True),
        ("/status", {HEADER.lower(): "s3cr3t"}, "s3cr3t", True),
        ("/status", {HEADER: "wrong"}, "s3cr3t", False),
        ("/status", {HEADER: ""}, "s3cr3t", False),
        ("/status", {HEADER: "anything"}, None, False),  # no key: nothing is served
        ("/status/ws", {"Upgrade": "websocket"}, "s3cr3t", False),
        ("/json/counts.json", {"Authorization": "token s3cr3t"}, "s3cr3t", False),
        ("/health", {}, "s3cr3t", True),
        ("/health", {}, None, True),
        ("/health/../status", {}, "s3cr3t", False),
        ("/healthz", {}, "s3cr3t", False),
    ],
)
def test_what_the_guard_admits(path, headers, secret, expected):
    assert admitted(path, HTTPHeaders(headers), secret) is expected


def test_relay_sends_the_secret_the_gateway_gave_as_the_header():
    assert upstream_headers("ab12" * 16) == {HEADER: "ab12" * 16}
    assert upstream_headers(None) == {}
    assert upstream_headers("a b\r\nX-Other: 1") == {}  # never a header of the gateway's making


def test_gateway_commands_preload_the_guard_right_after_dask():
    cmd = ["/env/bin/dask", "scheduler", "--protocol", "tls", "--preload", "dask_gateway.x"]
    assert with_guard(cmd, after=2) == [
        "/env/bin/dask",
        "scheduler",
        "--preload",
        GUARD_PRELOAD,
        "--protocol",
        "tls",
        "--preload",
        "dask_gateway.x",
    ]


LOOPBACK = ["127.0.0.0/8", "::1/128"]
NODES = ["10.1.0.0/16"]


@pytest.mark.parametrize(
    "address, networks, problem",
    [
        ("tls://127.0.0.1:40123", LOOPBACK, None),
        ("http://[::1]:8787", LOOPBACK, None),
        ("tls://10.1.2.3:8786", NODES, None),
        (
            "tls://10.2.0.1:8786",
            NODES,
            "its scheduler address 'tls://10.2.0.1:8786' is outside the allowed networks "
            "(10.1.0.0/16)",
        ),
        (
            "tls://192.0.2.2:8081",
            LOOPBACK,
            "its scheduler address 'tls://192.0.2.2:8081' is outside the allowed networks "
            "(127.0.0.0/8, ::1/128)",
        ),
        (
            "tls://127.0.0.1:8081",
            NODES,
            "its scheduler address 'tls://127.0.0.1:8081' is outside the allowed networks "
            "(10.1.0.0/16)",
        ),
        (
            "tls://localhost:8786",
            LOOPBACK,
            "its scheduler address 'tls://localhost:8786' is not an IP address and port",
        ),
        (
            "tls://metadata.internal:80",
            NODES,
            "its scheduler address 'tls://metadata.internal:80' is not an IP address and port",
        ),
        ("tls://127.0.0.1", LOOPBACK, "its scheduler address 'tls://127.0.0.1' has no port"),
        (
            "tls://127.0.0.1:99999",
            LOOPBACK,
            "its scheduler address 'tls://127.0.0.1:99999' is not an IP address and port",
        ),
        ("", LOOPBACK, "its scheduler address '' is not an IP address and port"),
    ],
)
def test_reported_addresses_must_be_ips_inside_the_backends_networks(address, networks, problem):
    assert address_problem("scheduler", address, networks) == problem


def test_every_address_of_a_heartbeat_is_checked_and_no_dashboard_is_fine():
    ok = {
        "scheduler_address": "tls://127.0.0.1:1",
        "api_address": "http://127.0.0.1:2",
        "dashboard_address": "",
    }
    assert reported_address_problems(ok, LOOPBACK) == []
    bad = dict(ok, api_address="http://10.9.9.9:2", dashboard_address="http://10.9.9.9:3")
    assert [p.split(" address")[0] for p in reported_address_problems(bad, LOOPBACK)] == [
        "its api",
        "its dashboard",
    ]


def test_slurm_node_networks_default_and_configured(tmp_path):
    assert node_networks("127.0.0.1") == ["127.0.0.1/32"]
    wide = node_networks("0.0.0.0")
    assert wide and not any(n.startswith(("127.", "::1", "fe80")) for n in wide)
    settings = {
        "dask": {"enabled": True, "slurm": {"node_networks": ["10.1.0.0/16"]}},
        "backend": "slurm",
        "data_dir": str(tmp_path),
        "port": 1,
        "scheduler_port": 2,
        "prefix": "/services/dask-gateway",
        "accounts": "system",
    }
    c = gateway_config(settings)
    assert c.AfhubSlurmBackend.allowed_networks == ["10.1.0.0/16"]
    from afhub.hub_config.gateway.local import AfhubLocalBackend

    assert AfhubLocalBackend().allowed_networks == LOOPBACK  # local clusters: loopback only


def test_the_gateway_steps_overridden_here_still_exist():
    # OwnedClusters overrides these steps of dask-gateway-server's DB backend; if an upgrade
    # renamed them, schedulers would run unguarded or their reports go unchecked
    from afhub.hub_config.gateway.clusters import OwnedClusters
    from dask_gateway_server.backends.db_base import DBBackendBase

    for step in ("get_scheduler_command", "get_worker_command", "on_cluster_heartbeat"):
        assert step in vars(DBBackendBase) and step in vars(OwnedClusters)


def test_a_node_network_that_is_not_one_is_named():
    from afhub.hub_config.dask_section import check

    slurm = {"node_networks": ["10.1.0.0/16", "10.x/8"]}
    problems = check({"dask": {"enabled": True, "slurm": slurm}})
    assert [p.path for p in problems] == ["dask.slurm.node_networks[1]"]


# -- a real scheduler with the guard ---------------------------------------------------------------

FETCH = r"""
import json, sys, urllib.request, urllib.error
url, headers = sys.argv[1], json.loads(sys.argv[2])
req = urllib.request.Request(url, headers=headers)
try:
    with urllib.request.urlopen(req, timeout=20) as r:
        print(json.dumps([r.status, r.read().decode(errors="replace")]))
except urllib.error.HTTPError as e:
    print(json.dumps([e.code, e.read().decode(errors="replace")]))
"""


def fetch(url: str, headers: dict | None = None, user: str | None = None) -> tuple[int, str]:
    """GET ``url`` from another process (as ``user`` when given: uid and groups dropped)."""
    kw = {}
    if user:
        pw = pwd.getpwnam(user)
        kw = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [], "cwd": "/"}
    out = subprocess.run(
        [f"{SERVER_ENV}/bin/python", "-c", FETCH, url, json.dumps(headers or {})],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        check=True,
        **kw,
    )
    status, body = json.loads(out.stdout)
    return status, body


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    if not os.path.exists(f"{SERVER_ENV}/bin/dask"):
        pytest.skip(f"no server environment at {SERVER_ENV} (`make server-env`)")
    from dask_gateway_server.tls import new_keypair

    work = tmp_path_factory.mktemp("guarded-scheduler")
    os.chmod(work, 0o700)
    cert, key = new_keypair("c1")
    cert_path, key_path = work / "dask.crt", work / "dask.pem"
    for path, data in ((cert_path, cert), (key_path, key)):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    info = work / "scheduler.json"
    base = [f"{SERVER_ENV}/bin/dask", "scheduler"]
    cmd = with_guard(
        base
        + ["--protocol", "tls", "--port", "0", "--host", "127.0.0.1"]
        + ["--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(info)],
        after=len(base),
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(cert_path),
        "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY": str(key_path),
        "DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT": str(cert_path),
    }
    log = open(work / "scheduler.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        wait_for(
            lambda: info.exists() and info.stat().st_size or proc.poll() is not None,
            timeout=60,
            what="the scheduler's file",
        )
        assert proc.poll() is None, (work / "scheduler.log").read_text()[-2000:]
        port = json.loads(info.read_text())["services"]["dashboard"]
        yield {
            "url": f"http://127.0.0.1:{port}",
            "secret": contract.dask_dashboard_secret(key),
            "pid": proc.pid,
            "log": work / "scheduler.log",
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


PAGES = ["/status", "/info/main/workers.html", "/json/counts.json", "/sitemap.json", "/"]


@pytest.mark.parametrize("page", PAGES)
def test_a_plain_get_of_the_dashboard_is_refused(scheduler, page):
    status, body = fetch(scheduler["url"] + page)
    assert status == 403
    assert "Bokeh" not in body and "worker" not in body.lower()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another account")
@pytest.mark.parametrize("page", ["/status", "/info/main/workers.html", "/json/counts.json"])
def test_another_account_cannot_read_the_dashboard(scheduler, page):
    status, body = fetch(scheduler["url"] + page, user="nobody")
    assert status == 403 and "Bokeh" not in body
    status, _ = fetch(scheduler["url"] + page, {HEADER: "0" * 64}, user="nobody")
    assert status == 403


def test_with_the_clusters_secret_the_pages_are_served(scheduler):
    headers = {HEADER: scheduler["secret"]}
    status, body = fetch(scheduler["url"] + "/status", headers)
    assert status == 200 and "Bokeh.embed.embed_items" in body
    status, body = fetch(scheduler["url"] + "/json/counts.json", headers)
    assert status == 200 and "workers" in json.loads(body)


def test_health_stays_open(scheduler):
    assert fetch(scheduler["url"] + "/health") == (200, "ok")


async def test_the_websocket_upgrade_is_refused_without_the_secret(scheduler):
    import tornado.websocket
    from tornado.httpclient import HTTPClientError, HTTPRequest

    url = scheduler["url"].replace("http", "ws", 1) + "/status/ws"
    with pytest.raises(HTTPClientError) as e:
        await tornado.websocket.websocket_connect(HTTPRequest(url, request_timeout=20))
    assert e.value.code == 403


def test_the_secret_is_in_no_argument_environment_or_log(scheduler):
    pid, secret = scheduler["pid"], scheduler["secret"]
    fetch(scheduler["url"] + "/status", {HEADER: secret})  # a request with it, logged or not
    fetch(scheduler["url"] + "/status", {HEADER: secret[::-1]})
    argv = open(f"/proc/{pid}/cmdline", "rb").read()
    environ = open(f"/proc/{pid}/environ", "rb").read()
    assert GUARD_PRELOAD.encode() in argv
    for where in (argv, environ, scheduler["log"].read_bytes()):
        assert secret.encode() not in where and secret[::-1].encode() not in where
        assert b"PRIVATE KEY" not in where


def test_without_a_readable_key_the_guard_serves_nothing(tmp_path):
    # distributed's own RoutingApplication in a fresh interpreter, guarded by importing the
    # preload with a key path that does not exist: everything but /health is refused
    code = r"""
import os, sys
os.environ["DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY"] = sys.argv[1]
import afhub.server_ext.dask_preload
from afhub.server_ext.contract import DASK_DASHBOARD_SECRET_HEADER as H
from distributed.http.health import routes
from distributed.http.routing import RoutingApplication
from tornado.httputil import HTTPHeaders, HTTPServerRequest
app = RoutingApplication(routes)
def handler(path, headers):
    req = HTTPServerRequest(method="GET", uri=path, headers=HTTPHeaders(headers))
    return app.find_handler(req).handler_class.__name__
print(handler("/sitemap.json", {}), handler("/sitemap.json", {H: "x"}), handler("/health", {}))
"""
    out = subprocess.run(
        [f"{SERVER_ENV}/bin/python", "-c", code, str(tmp_path / "missing.pem")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["RefusedHandler", "RefusedHandler", "HealthHandler"]
    assert "cannot read the TLS key" in out.stderr and "missing.pem" in out.stderr


def test_the_guard_module_runs_where_schedulers_run():
    # the scheduler imports it from its own environment: standard library, tornado, distributed
    out = subprocess.run(
        [
            f"{SERVER_ENV}/bin/python",
            "-c",
            f"import {GUARD_PRELOAD} as g, sys; print(g.__name__, 'jupyter_server' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == [GUARD_PRELOAD, "False"]
