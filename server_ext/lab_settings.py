"""JupyterLab setting defaults the facility decides for its users (no news prompt).

JupyterLab asks every new user "Would you like to get notified about official Jupyter news?"
while its setting ``@jupyterlab/apputils-extension:notification`` ``fetchNews`` is ``"none"``
(its shipped default). A facility decides that for its users: afhub makes ``"false"`` the
default (values ``singleuser.lab_news: false``, the default; ``true`` keeps JupyterLab's own
question, :data:`~afhub.server_ext.contract.LAB_NEWS`). It is a settings *default*, as an
``overrides.json`` shipped in the server environment would set it: a user may still turn news
on in the Settings Editor, nothing is written to the user's home, and an operator's own
overrides file (``{sys.prefix}/share/jupyter/lab/settings/overrides.json``) wins.

How: jupyterlab_server reads the overrides files once and hands the same dict to its settings
handlers; the extension's start hook (every extension is loaded by then, and no request has
been served) adds afhub's defaults to that dict. :func:`lab_defaults` and
:func:`add_defaults` are pure.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from . import contract

NEWS_PLUGIN = "@jupyterlab/apputils-extension:notification"


def lab_defaults(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The setting defaults for this server, by plugin id."""
    if contract.read_bool(environ, contract.LAB_NEWS, False):
        return {}
    return {NEWS_PLUGIN: {"fetchNews": "false"}}


def add_defaults(overrides: dict, defaults: Mapping[str, Mapping[str, Any]]) -> None:
    """Add ``defaults`` to JupyterLab's ``overrides`` where those do not set the key."""
    for plugin, settings in defaults.items():
        current = overrides.setdefault(plugin, {})
        for key, value in settings.items():
            current.setdefault(key, value)


def settings_overrides(web_app) -> list[dict]:
    """The overrides dicts JupyterLab's settings handlers were given, from ``web_app``'s
    routes (one dict shared by its handlers, usually)."""
    try:
        from jupyterlab_server.settings_handler import SettingsHandler
    except ImportError:  # no JupyterLab in this environment
        return []
    found: list[dict] = []

    def walk(router, depth=0):
        for rule in getattr(router, "rules", None) or []:
            target = rule.target
            if isinstance(target, type) and issubclass(target, SettingsHandler):
                o = (rule.target_kwargs or {}).get("overrides")
                if isinstance(o, dict) and not any(o is seen for seen in found):
                    found.append(o)
            elif depth < 4:
                walk(target, depth + 1)

    walk(web_app.default_router)
    return found


def apply_lab_defaults(serverapp) -> None:
    defaults = lab_defaults(os.environ)
    if not defaults:
        return
    targets = settings_overrides(serverapp.web_app)
    for overrides in targets:
        add_defaults(overrides, defaults)
    if targets:
        serverapp.log.info("afhub: JupyterLab news prompt off (values singleuser.lab_news)")
