"""The Dask preload the gateway gives every scheduler and worker (``--preload
afhub.server_ext.dask_preload``): their HTTP servers answer only the owner's relay
(:mod:`.dask_dashboard_guard`).

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
