"""Dask dashboards through the owner's server: the pure parts, as tables.

The gateway's answer (``hub_config/gateway/routes.py`` ``dashboard_answer``), what the server's
proxy forwards and rewrites (``server_ext/dask_dashboard.py``), and the contract: the link the
stock dask-gateway client builds from the ``public_address`` the server sets is a URL the
server's route serves. The whole path (real hub, gateway, Bokeh, bob refused) is in
``test_dask_integration.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import tornado.web
from afhub.hub_config import apply
from afhub.hub_config.gateway.clusters import OwnedClusters
from afhub.hub_config.gateway.routes import dashboard_answer
from afhub.server_ext import contract
from afhub.server_ext.dask_dashboard import (
    PANE_PAGES,
    DashboardError,
    DashboardProxyHandler,
    checked_address,
    framed_csp,
    is_pane_page,
    request_headers,
    response_headers,
    rewrite_location,
    session_cookie,
    setup_dashboard_handlers,
    upstream_url,
)
from dask_gateway_server.backends.db_base import DBBackendBase
from dask_gateway_server.models import Cluster, ClusterStatus
from facility import free_port
from tornado.httputil import HTTPHeaders

KEY = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIC1c\n-----END PRIVATE KEY-----\n"
SECRET = contract.dask_dashboard_secret(KEY)


def cluster(owner="alice", status=ClusterStatus.RUNNING, address="http://127.0.0.1:40123"):
    return SimpleNamespace(username=owner, status=status, dashboard_address=address, tls_key=KEY)


@pytest.mark.parametrize(
    "model, caller, status, body",
    [
        (cluster(), "alice", 200, {"address": "http://127.0.0.1:40123", "secret": SECRET}),
        (cluster(), "bob", 404, {"message": "no cluster of yours is named 'c1'"}),
        (None, "bob", 404, {"message": "no cluster of yours is named 'c1'"}),
        (cluster(), "service:x", 404, {"message": "no cluster of yours is named 'c1'"}),
        (
            cluster(status=ClusterStatus.PENDING, address=""),
            "alice",
            404,
            {"message": "cluster 'c1' is pending: it has no dashboard"},
        ),
        (
            cluster(status=ClusterStatus.STOPPED),
            "alice",
            404,
            {"message": "cluster 'c1' is stopped: it has no dashboard"},
        ),
        (
            cluster(status=ClusterStatus.FAILED),
            "alice",
            404,
            {"message": "cluster 'c1' is failed: it has no dashboard"},
        ),
        (
            cluster(address=""),
            "alice",
            404,
            {"message": "cluster 'c1' runs no dashboard (is bokeh installed?)"},
        ),
    ],
)
def test_gateway_tells_only_the_owner_where_a_running_dashboard_is(model, caller, status, body):
    assert dashboard_answer(model, caller, "c1") == (status, body)


def test_the_gateway_hook_that_drops_the_public_route_still_exists():
    # OwnedClusters overrides this private step of dask-gateway-server's DB backend; if an
    # upgrade renamed it, dashboards would be public again (the integration test shows 404)
    assert "_check_cluster_proxied" in vars(DBBackendBase)
    assert "_check_cluster_proxied" in vars(OwnedClusters)


@pytest.mark.parametrize(
    "location, expected",
    [
        ("/status", "/user/jo/afhub/dask/clusters/c1/status"),
        ("/status?x=1", "/user/jo/afhub/dask/clusters/c1/status?x=1"),
        ("http://127.0.0.1:40123/workers", "/user/jo/afhub/dask/clusters/c1/workers"),
        ("http://127.0.0.1:40123", "/user/jo/afhub/dask/clusters/c1/"),
        ("status", "status"),  # relative: the browser resolves it under the prefix
    ],
)
def test_dashboard_redirects_stay_under_the_clusters_route(location, expected):
    assert rewrite_location(location, "/user/jo/afhub/dask/clusters/c1/") == expected


def test_the_users_cookies_and_tokens_never_reach_the_dashboard():
    headers = HTTPHeaders(
        {
            "Cookie": "jupyterhub-user-jo=secret",
            "Authorization": "token secret",
            "X-XSRFToken": "secret",
            "Accept": "text/html",
            "If-None-Match": '"abc"',
            "Connection": "keep-alive",
        }
    )
    assert request_headers(headers) == {"Accept": "text/html", "If-None-Match": '"abc"'}


def test_dashboard_response_headers_pass_without_cookies_or_hop_by_hop_ones():
    got = response_headers(
        [
            ("Content-Type", "text/html"),
            ("Etag", '"abc"'),
            ("Set-Cookie", "x=1"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", "10"),
            ("Transfer-Encoding", "chunked"),
            ("Location", "/status"),
        ],
        "/user/jo/afhub/dask/clusters/c1",
    )
    assert got == [
        ("Content-Type", "text/html"),
        ("Etag", '"abc"'),
        ("Location", "/user/jo/afhub/dask/clusters/c1/status"),
    ]


@pytest.mark.parametrize(
    "address, expected",
    [
        ("http://127.0.0.1:40123", "http://127.0.0.1:40123"),
        ("http://node17.cluster:8787/", "http://node17.cluster:8787"),
        ("https://[::1]:8787", "https://[::1]:8787"),
        ("file:///etc/passwd", None),
        ("http://127.0.0.1:40123/elsewhere", None),
        ("", None),
        (None, None),
        (12, None),
    ],
)
def test_only_plain_http_dashboard_addresses_are_used(address, expected):
    if expected is None:
        with pytest.raises(DashboardError) as e:
            checked_address(address)
        assert e.value.status == 502
    else:
        assert checked_address(address) == expected


@pytest.mark.parametrize(
    "path, query, expected",
    [
        ("status", "", "http://h:1/status"),
        ("", "", "http://h:1/"),
        ("statics/css/base.css", "", "http://h:1/statics/css/base.css"),
        ("static/js/bokeh.min.js", "v=abc", "http://h:1/static/js/bokeh.min.js?v=abc"),
        ("individual plots/x y", "", "http://h:1/individual%20plots/x%20y"),
    ],
)
def test_upstream_url(path, query, expected):
    assert upstream_url("http://h:1", path, query) == expected


# -- the plots JupyterLab shows as panes: those pages alone may be framed, by the same origin --


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("frame-ancestors 'none'", "frame-ancestors 'self'"),  # JupyterHub's default
        (None, "frame-ancestors 'self'"),
        (
            "default-src 'self'; Frame-Ancestors 'none' https://x; report-uri /csp",
            "default-src 'self'; report-uri /csp; frame-ancestors 'self'",
        ),
        ("frame-ancestors *;", "frame-ancestors 'self'"),
    ],
)
def test_a_pane_page_may_be_framed_by_its_own_origin_only(policy, expected):
    assert framed_csp(policy) == expected


@pytest.mark.parametrize(
    "path, expected",
    [
        ("individual-task-stream", True),
        ("individual-progress", True),
        ("individual-workers-memory/", True),
        ("status", False),
        ("individual-task-stream/ws", False),  # a WebSocket is not framed
        ("individual-graph", False),
        ("static/js/bokeh.min.js", False),
        ("", False),
        (None, False),
    ],
)
def test_which_relayed_pages_are_pane_pages(path, expected):
    assert is_pane_page(path) is expected


def test_the_sidebar_opens_exactly_the_pane_pages():
    source = (Path(__file__).parent.parent / "labextension/src/dashboards.ts").read_text()
    assert set(re.findall(r"path: '([^']+)'", source)) == PANE_PAGES


# -- the contract: hub, server and the stock client agree --------------------------------------


def test_hub_leaves_public_address_to_the_server_and_turns_the_proxy_on():
    values = {
        "auth": {"provider": "dev"},
        "backend": {"type": "local"},
        "dask": {"enabled": True},
    }
    env = apply.build(values, data_dir="/tmp/afhub-test-dash").get("Spawner", "environment")
    assert env[contract.DASK_DASHBOARDS] == "proxy"
    assert contract.DASK_GATEWAY_PUBLIC_ADDRESS not in env
    assert contract.read_dask_dashboards_proxied(env)
    assert not contract.read_dask_dashboards_proxied({})


@pytest.mark.parametrize("base_url", ["/user/jo/", "/prefix/user/jo%40cern/", "/"])
def test_the_stock_clients_dashboard_link_is_served_by_the_servers_route(base_url, monkeypatch):
    from dask_gateway.client import ClusterReport

    monkeypatch.delenv(contract.DASK_GATEWAY_PUBLIC_ADDRESS, raising=False)
    app = tornado.web.Application(base_url=base_url)
    serverapp = SimpleNamespace(web_app=app)
    assert setup_dashboard_handlers(serverapp, {contract.DASK_DASHBOARDS: "proxy"})
    public = os.environ[contract.DASK_GATEWAY_PUBLIC_ADDRESS]
    assert public == base_url + "afhub/dask"
    # what dask-gateway-server's model and the stock client's report make of it
    msg = Cluster(
        "0123abcd",
        "jo",
        "t",
        {},
        {},
        ClusterStatus.RUNNING,
        dashboard_address="http://127.0.0.1:40123",
        start_time=1_700_000_000_000,
    ).to_dict(full=False)
    link = ClusterReport._from_json(public.rstrip("/"), "gateway://x:1", msg).dashboard_link
    assert link == base_url + "afhub/dask/clusters/0123abcd/status"
    match = app.default_router.find_handler(
        tornado.httputil.HTTPServerRequest(
            start_line=tornado.httputil.RequestStartLine("GET", link, "HTTP/1.1"),
            headers=tornado.httputil.HTTPHeaders({"Host": "h"}),
        )
    )
    assert match is not None and match.handler_class is DashboardProxyHandler
    assert match.path_args == [b"0123abcd", b"status"]


def test_no_proxy_when_the_gateway_serves_dashboards_itself(monkeypatch):
    monkeypatch.delenv(contract.DASK_GATEWAY_PUBLIC_ADDRESS, raising=False)
    app = tornado.web.Application(base_url="/user/jo/")
    assert not setup_dashboard_handlers(SimpleNamespace(web_app=app), {})
    assert contract.DASK_GATEWAY_PUBLIC_ADDRESS not in os.environ


@pytest.mark.parametrize(
    "headers, expected",
    [
        (["dask-gateway=abc123; HttpOnly; Max-Age=600; Path=/"], "dask-gateway=abc123"),
        (["a=1", "dask-gateway=new; Path=/"], "dask-gateway=new"),
        ([], None),
        (["not a cookie ;;; ="], None),
    ],
)
def test_the_gateways_session_cookie_is_kept_for_later_lookups(headers, expected):
    assert session_cookie(headers) == expected


# -- asking the gateway: failures are clear answers in the error model ------------------------


@pytest.mark.parametrize(
    "address, environ, status, message",
    [
        (None, {"JUPYTERHUB_API_TOKEN": "t"}, 409, "Dask is not enabled on this hub"),
        ("http://127.0.0.1:1/services/dask-gateway", {}, 409, "Dask is not enabled on this hub"),
        (
            "http://127.0.0.1:{port}/services/dask-gateway",
            {"JUPYTERHUB_API_TOKEN": "t"},
            502,
            "Dask Gateway is unreachable; try again in a moment",
        ),
    ],
)
async def test_gateway_lookup_failures(address, environ, status, message):
    import dask
    from afhub.server_ext.dask_dashboard import dashboard_upstream

    if address:
        address = address.format(port=free_port())
    with dask.config.set({"gateway.address": address}):
        with pytest.raises(DashboardError) as e:
            await dashboard_upstream("c1", environ)
    assert (e.value.status, e.value.message) == (status, message)
