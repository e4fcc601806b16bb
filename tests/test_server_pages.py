"""The user server's own HTML pages never carry its hub API token (``server_ext/pages.py``).

Jupyter Server's ``page.html`` (under every error, 404, login and logout page) writes the
identity provider's token into ``<body data-jupyter-api-token=...>``; under JupyterHub that is
the server's ``JUPYTERHUB_API_TOKEN``. Rendered here through Jupyter Server's own templates and
search path, before and after :func:`setup_pages`. The live check is
``tests/test_hostile_routes.py`` (no secret in any response of the server's routes).
"""

from __future__ import annotations

import pytest
from afhub.server_ext.pages import setup_pages
from jinja2 import Environment, FileSystemLoader
from jupyter_server import DEFAULT_TEMPLATE_PATH_LIST

TOKEN = "0123456789abcdef0123456789abcdef"


def namespace() -> dict:
    """What ``JupyterHandler.template_namespace`` gives a logged-in visitor (the parts the
    templates use)."""
    return {
        "base_url": "/user/bob/", "default_url": "/lab", "ws_url": "", "logged_in": True,
        "allow_password_change": False, "auth_enabled": True, "login_available": True,
        "token_available": True, "static_url": lambda path: path, "sys_info": "{}",
        "contents_js_source": "", "version_hash": "", "xsrf_form_html": lambda: "",
        "token": TOKEN, "xsrf_token": "x", "nbjs_translations": "{}", "status_code": 404,
        "status_message": "Not Found", "message": "nothing here", "exception": None,
    }  # fmt: skip


class App:
    def __init__(self):
        env = Environment(
            loader=FileSystemLoader(DEFAULT_TEMPLATE_PATH_LIST), extensions=["jinja2.ext.i18n"]
        )
        env.install_null_translations()
        self.settings = {"jinja2_env": env}


def test_stock_pages_carry_the_token():
    """The premise: without afhub, a 404 page has the server's token."""
    page = App().settings["jinja2_env"].get_template("404.html").render(**namespace())
    assert TOKEN in page


@pytest.mark.parametrize("template", ["404.html", "error.html", "page.html", "logout.html"])
def test_pages_carry_no_token(template):
    app = App()
    assert setup_pages(app)
    page = app.settings["jinja2_env"].get_template(template).render(**namespace())
    assert TOKEN not in page
    assert 'dir="ltr"' in page  # the page itself is whole


def test_no_loader_nothing_to_change():
    class Bare:
        settings: dict = {}

    assert setup_pages(Bare()) is False
