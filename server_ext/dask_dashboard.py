"""Dask dashboards through the user's own server, for that user only.

Route ``{base_url}afhub/dask/clusters/<name>/<path>`` (GET and HEAD, and the WebSocket upgrade
Bokeh's pages make to ``<page>/ws``). Each request asks the gateway as this server
(``GET {gateway}/api/v1/afhub/clusters/<name>/dashboard`` with the server's own API token)
where the cluster's dashboard listens and its secret; the gateway answers only for the owner's
own running clusters. The secret goes to the dashboard in a header
(:data:`~.contract.DASK_DASHBOARD_SECRET_HEADER`) with every request relayed: the scheduler's
HTTP server refuses whatever comes without it (``dask_dashboard_guard.py``), so another account
on the scheduler's host or network reads nothing there. JupyterHub's auth on this server lets only its user (and whoever the hub grants access
to the server) in. So: alice opens her dashboards, bob cannot open alice's server, and bob's
server asked for alice's cluster gets 404 from the gateway. Errors are the afhub error model
(``{"message": ...}``). The user's cookies and tokens are not forwarded to the dashboard;
nothing here logs a token.

JupyterLab shows some of the scheduler's individual plots as panes (the sidebar's
``labextension/src/dashboards.ts``): iframes on :data:`PANE_PAGES` through this same route.
JupyterHub forbids framing every page of a user's server (``frame-ancestors 'none'``); those
pages alone, as relayed here, may be framed by pages of the same origin (:func:`framed_csp`).
Their scripts, styles and WebSocket need nothing more; every other page keeps the hub's rule.

``cluster.dashboard_link`` of the stock client points here: the extension sets
``DASK_GATEWAY__PUBLIC_ADDRESS`` (:func:`~.contract.dask_public_address`) for this server
and its kernels. Pure helpers (header filters, the upstream URL, redirects) are on top; the
tornado handler below them.
"""

from __future__ import annotations

import json
import os
import sys
from typing import NamedTuple
from urllib.parse import quote, urlsplit

import tornado.web
import tornado.websocket
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.base.websocket import WebSocketMixin
from jupyter_server.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from . import contract
from .dask_service import CLUSTER_NAME

# request headers a dashboard may see: never Cookie or Authorization (the user's hub session
# and tokens stay here), never hop-by-hop ones
FORWARDED_REQUEST_HEADERS = (
    "Accept",
    "Accept-Language",
    "If-Modified-Since",
    "If-None-Match",
    "User-Agent",
)
# response headers passed back (the body is decompressed and its length set again here)
DROPPED_RESPONSE_HEADERS = {
    "connection",
    "content-encoding",
    "content-length",
    "keep-alive",
    "proxy-authenticate",
    "set-cookie",
    "transfer-encoding",
    "upgrade",
    "server",
    "date",
}


# the individual plots JupyterLab shows as panes (distributed/dashboard/scheduler.py's
# ``/individual-*`` Bokeh apps); the sidebar's ``DASHBOARD_PLOTS`` names the same pages
PANE_PAGES = frozenset(
    {"individual-task-stream", "individual-progress", "individual-workers-memory"}
)


class DashboardError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def request_headers(headers) -> dict[str, str]:
    """The request headers forwarded to a dashboard."""
    return {k: headers[k] for k in FORWARDED_REQUEST_HEADERS if headers.get(k)}


def response_headers(headers: list[tuple[str, str]], prefix: str) -> list[tuple[str, str]]:
    """A dashboard's response headers as the browser gets them: redirects kept under
    ``prefix`` (the cluster's route on this server)."""
    out = []
    for k, v in headers:
        if k.lower() in DROPPED_RESPONSE_HEADERS:
            continue
        if k.lower() == "location":
            v = rewrite_location(v, prefix)
        out.append((k, v))
    return out


_URL_IGNORED = {9: None, 10: None, 13: None}
_URL_STRIPPED = "".join(map(chr, range(33)))


def rewrite_location(location: str, prefix: str) -> str:
    """A redirect of the dashboard (``/status``, ``status``, ``http://127.0.0.1:8787/x``) as a
    path under ``prefix``; relative ones are left to the browser.

    Read as a browser reads it (WHATWG URL parsing): tabs and newlines dropped, leading and
    trailing controls and spaces stripped, backslashes taken as slashes; otherwise
    ``\\\\evil.example/`` passed as "relative" and the browser left the user's server."""
    location = location.translate(_URL_IGNORED).strip(_URL_STRIPPED).replace("\\", "/")
    parts = urlsplit(location)
    if parts.scheme or parts.netloc:
        path = parts.path or "/"
    elif location.startswith("/"):
        path = parts.path
    else:
        return location
    out = prefix.rstrip("/") + path
    return out + (f"?{parts.query}" if parts.query else "")


def framed_csp(policy: str | None) -> str:
    """The Content-Security-Policy of a pane's page: the server's own with its
    ``frame-ancestors`` replaced by ``'self'`` (JupyterLab, on the same origin, frames it)."""
    directives = [d.strip() for d in (policy or "").split(";") if d.strip()]
    kept = [d for d in directives if d.split()[0].lower() != "frame-ancestors"]
    return "; ".join([*kept, "frame-ancestors 'self'"])


def is_pane_page(path: str | None) -> bool:
    """Whether the relayed ``path`` is one of :data:`PANE_PAGES` (exactly: no subpath)."""
    return (path or "").strip("/") in PANE_PAGES


def checked_address(address: object) -> str:
    """The dashboard address the gateway gave (``http://host:port``), or DashboardError."""
    if isinstance(address, str):
        parts = urlsplit(address)
        if parts.scheme in ("http", "https") and parts.hostname and parts.path in ("", "/"):
            return f"{parts.scheme}://{parts.netloc}"
    raise DashboardError(502, "Dask Gateway gave no usable dashboard address")


def upstream_url(address: str, path: str, query: str = "") -> str:
    """The dashboard URL of ``path`` (decoded, as tornado hands it over) with ``query``."""
    url = address.rstrip("/") + "/" + quote(path.lstrip("/"), safe="/-._~!$&'()*+,;=:@")
    return url + (f"?{query}" if query else "")


def gateway_message(body: bytes, fallback: str) -> str:
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return message if isinstance(message, str) and message else fallback


# the gateway's session cookie for this server's user (as the dask-gateway client keeps it):
# later lookups skip the gateway's round trip to the hub; the gateway expires it itself
_gateway_session: dict[str, str] = {}


def session_cookie(set_cookie_headers: list[str]) -> str | None:
    """``name=value`` of the last cookie the gateway set (its auth cache), or None."""
    from http.cookies import CookieError, SimpleCookie

    for header in reversed(set_cookie_headers):
        try:
            jar = SimpleCookie(header)
        except CookieError:
            continue
        for morsel in jar.values():
            return f"{morsel.key}={morsel.coded_value}"
    return None


class Upstream(NamedTuple):
    """Where a dashboard listens and the headers every request to it carries (its secret)."""

    address: str
    headers: dict[str, str]


def upstream_headers(secret: object) -> dict[str, str]:
    """The dashboard secret the gateway gave, as the header the scheduler checks."""
    if isinstance(secret, str) and secret.isalnum():
        return {contract.DASK_DASHBOARD_SECRET_HEADER: secret}
    return {}  # an older gateway: the dashboard (unguarded, or refusing) decides


async def dashboard_upstream(name: str, environ=None) -> Upstream:
    """Ask the gateway, as this server, where cluster ``name`` of this user serves its
    dashboard, and its secret. DashboardError(404) when it is not this user's running
    cluster."""
    import dask
    from dask_gateway.utils import format_template

    env = os.environ if environ is None else environ
    gateway = format_template(dask.config.get("gateway.address", None))
    token = env.get("JUPYTERHUB_API_TOKEN")
    if not gateway or not token:
        raise DashboardError(409, "Dask is not enabled on this hub")
    url = gateway.rstrip("/") + contract.DASK_DASHBOARD_ROUTE.format(name=quote(name, safe=""))
    headers = {"Authorization": f"jupyterhub {token}", "Accept": "application/json"}
    if _gateway_session.get(gateway):
        headers["Cookie"] = _gateway_session[gateway]
    request = HTTPRequest(url, headers=headers, request_timeout=30, follow_redirects=False)
    try:
        resp = await AsyncHTTPClient().fetch(request, raise_error=False)
    except (OSError, HTTPClientError):  # refused, unreachable, timed out
        raise DashboardError(502, "Dask Gateway is unreachable; try again in a moment") from None
    cookie = session_cookie(resp.headers.get_list("Set-Cookie"))
    if cookie:
        _gateway_session[gateway] = cookie
    if resp.code == 404:
        raise DashboardError(404, gateway_message(resp.body, "no cluster of yours by that name"))
    if resp.code != 200:
        raise DashboardError(502, f"Dask Gateway answered {resp.code} for the dashboard")
    try:
        answer = json.loads(resp.body)
        address, secret = answer.get("address"), answer.get("secret")
    except (ValueError, AttributeError):
        address = secret = None
    return Upstream(checked_address(address), upstream_headers(secret))


class DashboardProxyHandler(WebSocketMixin, tornado.websocket.WebSocketHandler, JupyterHandler):
    """One cluster's dashboard: HTTP GET/HEAD, and WebSocket upgrades piped both ways."""

    auth_resource = "server"

    def initialize(self, environ=None):
        self.environ = environ
        self.upstream_ws = None
        self.subprotocol = None
        self.early: list | None = []  # the dashboard's messages before the browser's side opened

    def prepare(self, *args, **kwargs):
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            return super().prepare(*args, **kwargs)  # 403 without a login, as jupyter_server's
        return JupyterHandler.prepare(self, *args, **kwargs)  # pages: redirect to the login

    def prefix(self, name: str) -> str:
        return url_path_join(self.base_url, contract.DASK_DASHBOARD_PATH, "clusters", name)

    def fail(self, e: DashboardError) -> None:
        self.set_status(e.status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": e.message}))

    @tornado.web.authenticated
    @authorized
    async def get(self, name: str, path: str | None = None):
        upstream = await self.lookup(name)
        if upstream is None:
            return
        if self.request.headers.get("Upgrade", "").lower() == "websocket":
            await self.websocket(name, path or "", upstream)
        else:
            await self.proxy(name, path or "", upstream)

    @tornado.web.authenticated
    @authorized
    async def head(self, name: str, path: str | None = None):
        upstream = await self.lookup(name)
        if upstream is not None:
            await self.proxy(name, path or "", upstream)

    async def lookup(self, name: str) -> Upstream | None:
        """The dashboard's address and secret from the gateway; None once the error is
        answered."""
        try:
            return await dashboard_upstream(name, self.environ)
        except DashboardError as e:
            self.fail(e)
            return None

    async def proxy(self, name: str, path: str, upstream: Upstream) -> None:
        request = HTTPRequest(
            upstream_url(upstream.address, path, self.request.query),
            method=self.request.method,
            headers={**request_headers(self.request.headers), **upstream.headers},
            follow_redirects=False,
            request_timeout=60,
        )
        try:
            resp = await AsyncHTTPClient().fetch(request, raise_error=False)
        except (OSError, HTTPClientError):  # refused, unreachable, timed out
            self.fail(DashboardError(502, f"the dashboard of cluster {name!r} is not answering"))
            return
        self.set_status(resp.code, resp.reason)
        self.clear_header("Content-Type")
        own_csp = self._headers.get("Content-Security-Policy")  # the server's (the hub's rule)
        for k, v in response_headers(list(resp.headers.get_all()), self.prefix(name)):
            self.add_header(k, v)
        if is_pane_page(path):
            self.set_header("Content-Security-Policy", framed_csp(own_csp))
        if resp.body and self.request.method != "HEAD" and resp.code not in (204, 304):
            self.write(resp.body)
        self.finish()

    # -- WebSocket ------------------------------------------------------------------------
    async def websocket(self, name: str, path: str, upstream: Upstream) -> None:
        url = upstream_url(upstream.address.replace("http", "ws", 1), path, self.request.query)
        offered = [
            p.strip()
            for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        ]
        try:
            self.upstream_ws = await tornado.websocket.websocket_connect(
                HTTPRequest(url, headers=dict(upstream.headers), request_timeout=30),
                subprotocols=offered or None,
                on_message_callback=self.on_upstream_message,
                max_message_size=64 * 2**20,
            )
        except (OSError, HTTPClientError, tornado.websocket.WebSocketError):
            self.fail(DashboardError(502, f"the dashboard of cluster {name!r} is not answering"))
            return
        self.subprotocol = self.upstream_ws.selected_subprotocol
        await tornado.websocket.WebSocketHandler.get(self, name, path)

    def select_subprotocol(self, subprotocols):
        return self.subprotocol if self.subprotocol in subprotocols else None

    def open(self, *args, **kwargs):
        super().open(*args, **kwargs)
        early, self.early = self.early or [], None
        for message in early:
            self.on_upstream_message(message)

    def on_upstream_message(self, message) -> None:
        if self.early is not None:  # not open yet (the dashboard speaks first: Bokeh's ACK)
            self.early.append(message)
            return
        if message is None:  # the dashboard closed
            self.close()
            return
        try:
            self.write_message(message, binary=isinstance(message, bytes))
        except tornado.websocket.WebSocketClosedError:
            self.close_upstream()

    async def on_message(self, message):
        if self.upstream_ws is None:
            return
        try:
            await self.upstream_ws.write_message(message, binary=isinstance(message, bytes))
        except tornado.websocket.WebSocketClosedError:
            self.close()

    def on_close(self) -> None:
        self.close_upstream()

    def on_finish(self) -> None:
        if self.ws_connection is None:  # an HTTP request, or an upgrade that failed
            self.close_upstream()

    def close_upstream(self) -> None:
        ws, self.upstream_ws = self.upstream_ws, None
        if ws is not None:
            ws.close()


def setup_dashboard_handlers(serverapp, environ=None) -> bool:
    """Serve this user's dashboards when the hub's gateway leaves them to the servers
    (``AFHUB_DASK_DASHBOARDS=proxy``); point ``cluster.dashboard_link`` here."""
    env = os.environ if environ is None else environ
    if not contract.read_dask_dashboards_proxied(env):
        return False
    web_app = serverapp.web_app
    base_url = web_app.settings["base_url"]
    public = contract.dask_public_address(base_url)
    os.environ[contract.DASK_GATEWAY_PUBLIC_ADDRESS] = public  # this server and its kernels
    if "dask" in sys.modules:  # already configured from the environment: set it there too
        import dask

        dask.config.set({"gateway.public-address": public})
    route = url_path_join(base_url, contract.DASK_DASHBOARD_PATH, "clusters", CLUSTER_NAME)
    web_app.add_handlers(
        ".*$", [(route + "(?:/(.*))?", DashboardProxyHandler, {"environ": environ})]
    )
    return True
