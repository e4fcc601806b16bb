"""nbclient on a kernel of a user's running server: a notebook run headless (as ``jupyter
nbconvert --execute`` or papermill run one) whose kernel is started, driven and shut down by
the user's own server through the hub's proxy, over its REST API and kernel websocket, with an
API token of that user. The kernel is therefore the one JupyterLab would give them: their
account, their server's environment, its variables (data cache, token file, the Dask gateway).

jupyter_server's Gateway kernel manager and client speak that protocol (a kernel gateway's API
is a server's kernels API); its client opens the websocket without headers and with the launch
timeout as read timeout, so :class:`ServerKernelClient` opens it with the token and no read
timeout (a cell may print nothing for minutes).
"""

from __future__ import annotations

from threading import Thread

import nbformat
import websocket
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_core.utils import ensure_async
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.gateway.managers import GatewayKernelClient, GatewayKernelManager
from jupyter_server.utils import url_escape, url_path_join
from nbclient import NotebookClient
from traitlets import Type


class ServerKernelClient(GatewayKernelClient):
    async def start_channels(self, shell=True, iopub=True, stdin=True, hb=True, control=True):
        gateway = GatewayClient.instance()
        url = url_path_join(
            gateway.ws_url, gateway.kernels_endpoint, url_escape(self.kernel_id), "channels"
        )
        self.channel_socket = websocket.create_connection(
            url,
            header=[f"Authorization: token {gateway.auth_token}"],
            timeout=None,
            enable_multithread=True,
        )
        await ensure_async(
            AsyncKernelClient.start_channels(
                self, shell=shell, iopub=iopub, stdin=stdin, hb=hb, control=control
            )
        )
        self.response_router = Thread(target=self._route_responses, daemon=True)
        self.response_router.start()


class ServerKernelManager(GatewayKernelManager):
    client_factory = Type(ServerKernelClient, klass=GatewayKernelClient)


def user_api_token(hs, note: str) -> str:
    """A new API token of ``hs``'s user, made with their logged-in session (their own scopes)."""
    r = hs.api("POST", f"users/{hs.username}/tokens", json={"note": note, "expires_in": 3600})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def execute_on_server(hs, nb: nbformat.NotebookNode, timeout: float = 600) -> NotebookClient:
    """Execute every cell of ``nb`` in order (in place) on a new kernel of ``hs``'s user's
    running server; the kernel is shut down after. A cell that raises raises
    ``nbclient.exceptions.CellExecutionError``."""
    model = hs.server_model()
    assert model and model.get("ready"), f"{hs.username} has no running server"
    base = hs.url(model["url"]).rstrip("/")
    GatewayClient.clear_instance()
    GatewayClient.instance(
        url=base,
        ws_url=base.replace("http://", "ws://", 1).replace("https://", "wss://", 1),
        auth_token=user_api_token(hs, "nbclient"),
        auth_scheme="token",
        request_timeout=120.0,
    )
    try:
        client = NotebookClient(
            nb,
            km=ServerKernelManager(),
            timeout=timeout,
            kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        )
        client.execute()
        return client
    finally:
        GatewayClient.clear_instance()


def cell_text(cell) -> str:
    """What a code cell printed (its stream outputs)."""
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")
