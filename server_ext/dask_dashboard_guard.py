"""A scheduler's (or worker's) HTTP server that answers only its owner's relay.

The gateway starts schedulers and workers with ``--preload afhub.server_ext.dask_preload``
(``hub_config/gateway/clusters.py`` ``OwnedClusters``), which calls :func:`install` when
distributed imports it, before the scheduler creates its HTTP server: every
``distributed.http.routing.RoutingApplication`` in the process is guarded. A request (page,
asset, JSON route or Bokeh's WebSocket upgrade) is routed only when it carries the cluster's
dashboard secret in :data:`~.contract.DASK_DASHBOARD_SECRET_HEADER`; anything else gets 403 and
no content.
Distributed's ``/health`` stays open (it answers ``ok``).

The secret is :func:`~.contract.dask_dashboard_secret` of the cluster's TLS key, read from the
key file the process already uses (``distributed.comm.tls.scheduler.key`` or ``...worker.key``):
it is in no argument, no environment variable and no file of its own. The gateway derives the
same from the key it stores and tells only the owner (its dashboard route); the owner's server
adds it to what it relays (``dask_dashboard.py``). Without a readable key nothing but ``/health`` is
served. The secret is never logged: only paths reach tornado's access log.

Importing this module changes nothing (the pure parts are tested in-process); the preload
``dask_preload.py`` installs it. Runs in the scheduler's environment (the image or the server
environment): standard library, tornado and distributed only.
"""

from __future__ import annotations

import hmac
import logging

from tornado import web

from .contract import DASK_DASHBOARD_SECRET_HEADER, dask_dashboard_secret

logger = logging.getLogger("distributed.afhub.dashboard_guard")

# paths served without the secret (exact): distributed's health check
OPEN_PATHS = frozenset({"/health"})
REFUSED_MESSAGE = "This Dask dashboard opens only through its owner's server.\n"


def admitted(path: str, headers, secret: str | None) -> bool:
    """Whether a request for ``path`` with ``headers`` may reach the dashboard."""
    if path in OPEN_PATHS:
        return True
    given = headers.get(DASK_DASHBOARD_SECRET_HEADER) if headers is not None else None
    if not secret or not given:
        return False
    return hmac.compare_digest(given.encode(), secret.encode())


class RefusedHandler(web.RequestHandler):
    """403 for every method (a WebSocket upgrade included), with no detail."""

    def prepare(self):
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(REFUSED_MESSAGE)


def key_file(config=None) -> str | None:
    """The TLS key file of this scheduler or worker (dask config from its environment)."""
    if config is None:
        import dask

        config = dask.config
    for role in ("scheduler", "worker"):
        path = config.get(f"distributed.comm.tls.{role}.key", None)
        if path:
            return path
    return None


def read_secret(path: str | None) -> str | None:
    """The dashboard secret from the key file at ``path``; None (serve nothing) without one."""
    if not path:
        logger.warning("afhub: no TLS key configured; the dashboard serves nothing")
        return None
    try:
        with open(path, "rb") as f:
            return dask_dashboard_secret(f.read())
    except (OSError, ValueError) as e:
        logger.warning("afhub: cannot read the TLS key (%s); the dashboard serves nothing", e)
        return None


def guard(cls, secret: str | None) -> None:
    """Route requests of every ``cls`` application only when :func:`admitted`."""
    if getattr(cls.find_handler, "afhub_guarded", False):
        return
    unguarded = cls.find_handler

    def find_handler(self, request, **kwargs):
        if admitted(request.path, request.headers, secret):
            return unguarded(self, request, **kwargs)
        return self.get_handler_delegate(request, RefusedHandler)

    find_handler.afhub_guarded = True
    cls.find_handler = find_handler


def guarded(app) -> bool:
    return bool(getattr(getattr(app, "find_handler", None), "afhub_guarded", False))


def install() -> None:
    """Guard distributed's ``RoutingApplication`` (every scheduler's and worker's HTTP
    application) in this process with the secret of its TLS key. Only the preload calls it."""
    from distributed.http.routing import RoutingApplication

    guard(RoutingApplication, read_secret(key_file()))


def check_server(server) -> None:
    """Refuse to run a server whose HTTP application escaped the guard (a distributed that
    builds it another way)."""
    app = getattr(server, "http_application", None)
    if app is not None and not guarded(app):
        raise RuntimeError(
            "afhub: the dashboard guard does not cover this server's HTTP application "
            f"({type(app).__module__}.{type(app).__qualname__}); refusing to serve it"
        )
