"""afhub's hub-side loggers (``afhub.*``: tokens, capacity, values) write into JupyterHub's log.

JupyterHub sends its own and tornado's records through its application logger (its
``init_logging`` makes that logger tornado's parent). afhub's modules log to ``afhub.<area>``
loggers, which have no handler of their own: without this, their INFO lines (a refreshed token,
a capacity reading) are dropped and their warnings reach stderr without the hub's format.
The authenticator and the spawners call :func:`into_hub_log` when JupyterHub creates them.
"""

from __future__ import annotations

import logging

AFHUB_LOGGER = "afhub"


def into_hub_log(app_log: logging.Logger | None = None) -> bool:
    """Make ``app_log`` (default: the running JupyterHub's log) the parent of afhub's loggers.

    Does nothing outside a running JupyterHub (a spawner made in a test or another tool keeps
    Python's default routing). Returns whether afhub's loggers now go to a hub log.
    """
    if app_log is None:
        from traitlets.config import Application

        if not Application.initialized():
            return False
        app = Application.instance()
        if type(app).__name__ != "JupyterHub":
            return False
        app_log = app.log
    logger = logging.getLogger(AFHUB_LOGGER)
    if logger.parent is not app_log:
        logger.parent = app_log
        logger.propagate = True
    return True
