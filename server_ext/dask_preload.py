"""The Dask preload the gateway gives every scheduler and worker (``--preload
afhub.server_ext.dask_preload``): their HTTP servers answer only the owner's relay
(:mod:`.dask_dashboard_guard`); schedulers hold joining workers until the data-access token
is there (:mod:`.dask_token_gate`); workers freeze their imports out of the garbage collector's
scans after their first task (:mod:`.dask_worker_gc`).

Importing it installs the guard, so import it nowhere else: distributed imports a preload while
it builds the scheduler, before the HTTP server exists, so no request is ever unguarded.
``dask_setup`` (run once the server has started) checks that the guard covers its HTTP
application and stops the server otherwise.
"""

from __future__ import annotations

from .dask_dashboard_guard import check_server, install

install()


def dask_setup(server) -> None:
    check_server(server)
    if hasattr(server, "worker_plugins") and hasattr(server, "add_worker"):  # a scheduler
        import os

        from .dask_token_gate import install as hold_workers_for_token
        from .dask_token_gate import wait_seconds

        hold_workers_for_token(server, wait_seconds(os.environ))
    elif hasattr(server, "plugin_add") and hasattr(server, "executing_count"):  # a worker
        from .dask_worker_gc import FreezeAfterFirstTask

        plugin = FreezeAfterFirstTask()
        server.loop.add_callback(server.plugin_add, plugin=plugin, name=plugin.name)
