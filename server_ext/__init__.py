"""afhub.server_ext: the Jupyter server extension of afhub.

A small loader only: linking selects the environment kernel spec manager (before ServerApp
creates its managers), loading registers the REST handlers of each feature module. Feature logic
lives in its own modules: kernel discovery in `kernel_discovery.py`/`env_scan.py`/`envs.py`,
environment REST routes in `handlers.py`, kernel aliases in opened notebooks in
`notebook_kernels.py`, what the server runs on (for the sidebar) in `session.py`, JupyterLab
setting defaults the facility decides (no news prompt) in `lab_settings.py`, what the
server's own HTML pages may carry (never its hub API token) in `pages.py`.
Enable with `jupyter server extension enable afhub.server_ext`, or ship
`jupyter-config/jupyter_server_config.d/afhub.json` into `{sys.prefix}/etc/jupyter`.
"""

from __future__ import annotations


def _jupyter_server_extension_points():
    return [{"module": "afhub.server_ext"}]


def _link_jupyter_server_extension(serverapp):
    from .kernel_discovery import link_kernel_spec_manager

    link_kernel_spec_manager(serverapp)


def _load_jupyter_server_extension(serverapp):
    from . import dask_handlers, handlers, notebook_kernels, session, token_handlers

    handlers.setup_handlers(serverapp.web_app)
    notebook_kernels.setup_notebook_kernels(serverapp)
    token_handlers.setup_token_handlers(serverapp)
    from . import data_handlers

    data_handlers.setup_data_handlers(serverapp.web_app)
    session.setup_session_handlers(serverapp.web_app)
    dask_handlers.setup_dask_handlers(serverapp)
    from .pages import setup_pages

    setup_pages(serverapp.web_app)  # no hub API token of the server in its HTML pages
    serverapp.log.info("afhub server extension loaded")


async def _start_jupyter_server_extension(serverapp):
    """After every extension is loaded (JupyterLab's settings routes exist), before requests."""
    from .lab_settings import apply_lab_defaults

    apply_lab_defaults(serverapp)
