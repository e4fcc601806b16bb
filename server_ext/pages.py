"""What the user server's own HTML pages (errors, 404s, login/logout) may carry.

Jupyter Server's ``page.html`` writes the identity provider's ``token`` into every page a
logged-in visitor gets (``<body data-jupyter-api-token=...>``, its ``params`` block). Under
JupyterHub that token is the server's own hub API token (``JUPYTERHUB_API_TOKEN``), which the
token broker accepts as this server: anyone the server answers (its owner, an admin, a user
it is shared with) would read it from any 404 page and could fetch the owner's data token.
Nothing in the page needs it: JupyterLab talks to the server with the visitor's own OAuth
cookie, and its page config carries the visitor's token, never the server's.

:func:`setup_pages` puts one template before Jupyter Server's: ``page.html``, extending the
original and emptying its ``params`` block. Templates that extend ``page.html`` (``error.html``,
``404.html``, ``login.html``...) get it; nothing else changes.
"""

from __future__ import annotations

from jinja2 import ChoiceLoader, DictLoader

# "templates/page.html": Jupyter Server's own, through its package directory on the search path
PAGE = '{% extends "templates/page.html" %}{% block params %}{% endblock params %}'


def setup_pages(web_app) -> bool:
    """Serve pages without the server's API token; False when the server has no page loader
    (nothing to change)."""
    env = web_app.settings.get("jinja2_env")
    if env is None or env.loader is None:
        return False
    env.loader = ChoiceLoader([DictLoader({"page.html": PAGE}), env.loader])
    return True
