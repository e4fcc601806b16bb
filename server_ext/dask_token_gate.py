"""A scheduler that admits workers only once the data-access token is there.

The user's server puts the token on a cluster by registering
:class:`~.dask_token.BearerTokenPlugin` at its scheduler (``dask.py`` for clusters it creates,
``dask_service.py``'s sync loop for clusters made elsewhere, such as with the stock
``dask_gateway.Gateway()`` in a notebook: it finds those within its listing interval). A
worker gets the scheduler's plugins in the reply to its registration and sets them up before
it reads any task, so a worker that registers *after* the plugin holds the token before its
first task. :func:`install` makes the scheduler hold each registration until the plugin is
registered, at most ``timeout`` seconds (``AFHUB_DASK_TOKEN_WAIT`` in the cluster's
environment, set by the hub where servers get tokens; below the gateway's 60 s worker start
timeout). After a timeout the scheduler stops waiting: workers join without the token, as
before, and get it whenever the server sends it.

Called from the gateway's preload (``dask_preload.py``) in schedulers only. Standard library and
distributed only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from . import contract
from .dask_token import PLUGIN_NAME

logger = logging.getLogger("distributed.afhub.token_gate")
HANDLER = "register-worker"


def wait_seconds(environ: Mapping[str, str]) -> float:
    """How long to hold a joining worker (0: not at all)."""
    try:
        return max(0.0, float(environ.get(contract.DASK_TOKEN_WAIT) or 0))
    except ValueError:
        return 0.0


def install(scheduler, timeout: float, *, poll: float = 0.05) -> bool:
    """Hold ``scheduler``'s worker registrations until the token plugin is registered."""
    original = scheduler.handlers.get(HANDLER)
    if timeout <= 0 or original is None or getattr(original, "afhub_token_gate", False):
        return False
    state = {"gave_up": False}

    async def register_worker(comm, **msg):
        deadline = time.monotonic() + timeout
        while PLUGIN_NAME not in scheduler.worker_plugins and not state["gave_up"]:
            if time.monotonic() >= deadline:
                state["gave_up"] = True
                logger.warning(
                    "afhub: no data-access token after %.0f s; workers join without it", timeout
                )
                break
            await asyncio.sleep(poll)
        return await original(comm, **msg)

    register_worker.afhub_token_gate = True
    scheduler.handlers[HANDLER] = register_worker
    return True
