"""afhub's routes of the gateway's API (added by ``process.AfhubDaskGateway``).

``GET {prefix}/api/v1/afhub/limits``: the caller's limits; ``GET
{prefix}/api/v1/afhub/clusters/<name>/dashboard``: where the caller's own running cluster serves
its dashboard, and its secret.
"""

from __future__ import annotations

from afhub.server_ext import dask_options
from aiohttp import web
from dask_gateway_server.models import ClusterStatus
from dask_gateway_server.routes import api_handler


@api_handler(user_authenticated=True)
async def limits_route(request):
    """``GET {prefix}/api/v1/afhub/limits``: the caller's limits (the notebook API checks
    ``workers`` against ``max_workers`` before asking for them)."""
    settings = request.app["gateway"].afhub_settings
    limits = dask_options.limits_for(settings["dask"], request["user"].groups)
    return web.json_response(limits.model())


def dashboard_answer(cluster, username: str, name: str) -> tuple[int, dict]:
    """Pure: the answer of the dashboard route for ``username`` asking about cluster ``name``
    (``cluster``: the gateway's model or None). Only the owner learns anything, even that the
    cluster exists; messages are the afhub error model. With the address comes the cluster's
    dashboard secret (its scheduler refuses requests without it; ``dask_dashboard_guard``)."""
    if cluster is None or cluster.username != username:
        return 404, {"message": f"no cluster of yours is named {name!r}"}
    if cluster.status != ClusterStatus.RUNNING:
        state = cluster.status.name.lower()
        return 404, {"message": f"cluster {name!r} is {state}: it has no dashboard"}
    if not cluster.dashboard_address:
        return 404, {"message": f"cluster {name!r} runs no dashboard (is bokeh installed?)"}
    from afhub.server_ext.contract import dask_dashboard_secret

    secret = dask_dashboard_secret(cluster.tls_key)
    return 200, {"address": cluster.dashboard_address, "secret": secret}


@api_handler(user_authenticated=True)
async def dashboard_route(request):
    """``GET {prefix}/api/v1/afhub/clusters/<name>/dashboard``: where the caller's own running
    cluster serves its dashboard and its secret (``{"address": "http://host:port", "secret":
    ...}``), else 404."""
    name = request.match_info["cluster_name"]
    cluster = await request.app["backend"].get_cluster(name)
    status, body = dashboard_answer(cluster, request["user"].name, name)
    return web.json_response(body, status=status)
