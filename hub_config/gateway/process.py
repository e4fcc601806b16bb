"""The gateway process: settings from the environment -> dask-gateway ``Config`` -> run.

``main`` is what ``python -m afhub.hub_config.gateway`` runs (the hub's ``dask-gateway``
service, ``hub_config/dask_section.py``). What must not live here: backends, options, routes (their
own modules).
"""

from __future__ import annotations

import json
import os
import socket

from afhub.hub_config.dask_section import SETTINGS_ENV
from afhub.hub_config.secrets import ensure_generated
from dask_gateway_server.app import DaskGateway
from traitlets.config import Config

from .auth import AfhubGatewayAuthenticator
from .local import AfhubLocalBackend
from .options import cluster_options
from .routes import dashboard_route, limits_route
from .slurm import AfhubSlurmBackend, slurm_launcher


def settings_from_env(environ=None) -> dict:
    env = os.environ if environ is None else environ
    try:
        return json.loads(env[SETTINGS_ENV])
    except (KeyError, ValueError) as e:
        raise SystemExit(
            f"afhub dask gateway: {SETTINGS_ENV} is missing or not JSON ({e})"
        ) from None


class AfhubDaskGateway(DaskGateway):
    afhub_settings: dict = {}

    def initialize(self, argv=None):
        super().initialize(argv)
        self.app.router.add_get("/api/v1/afhub/limits", limits_route)
        self.app.router.add_get("/api/v1/afhub/clusters/{cluster_name}/dashboard", dashboard_route)


def gateway_config(settings: dict) -> Config:
    data_dir = settings["data_dir"]
    c = Config()
    G = "AfhubDaskGateway"
    c[G].config_file = os.path.join(data_dir, "dask_gateway_config.py")  # operators' extras
    c[G].authenticator_class = AfhubGatewayAuthenticator
    slurm = settings.get("backend") == "slurm"
    c[G].backend_class = AfhubSlurmBackend if slurm else AfhubLocalBackend
    c[G].address = "127.0.0.1:0"  # private API server; the proxy fronts it
    ip = settings.get("gateway_ip", "127.0.0.1")  # loopback unless Slurm nodes must reach it
    c.Proxy.address = f"{ip}:{settings['port']}"  # the hub's proxy fronts it
    c.Proxy.tcp_address = f"{ip}:{settings['scheduler_port']}"
    c.Proxy.prefix = settings["prefix"]
    c.JupyterHubAuthenticator.jupyterhub_service_name = "dask-gateway"
    c.JupyterHubAuthenticator.use_service_access_scopes = True
    c.DBBackendBase.db_url = "sqlite:///" + os.path.join(data_dir, "dask-gateway.sqlite")
    c.DBBackendBase.stop_clusters_on_shutdown = False  # a hub restart keeps users' clusters
    c.Backend.cluster_options = cluster_options(settings)
    c.OwnedClusters.server_check_interval = float(settings.get("server_check_interval", 10))
    s = settings["dask"].get("slurm") or {}
    for key in ("partition", "account", "qos"):
        if s.get(key):
            setattr(c.SlurmClusterConfig, key, s[key])
    if s.get("setup"):
        c.SlurmClusterConfig.scheduler_setup = s["setup"]
        c.SlurmClusterConfig.worker_setup = s["setup"]
    if s.get("staging_directory"):
        c.SlurmClusterConfig.staging_directory = s["staging_directory"]
    if s.get("scheduler_cores"):
        c.SlurmClusterConfig.scheduler_cores = int(s["scheduler_cores"])
    if s.get("scheduler_memory"):
        c.SlurmClusterConfig.scheduler_memory = int(s["scheduler_memory"] * 2**30)
    from afhub.spawner.accounts import resolve_mode

    mode = resolve_mode(settings.get("accounts", "auto"), euid=os.geteuid())
    c.OwnedClusters.account_prefix = settings.get("account_prefix", "afhub-")
    c.AfhubLocalBackend.run_as_owner = mode == "system"
    if slurm:
        S = c.AfhubSlurmBackend
        S.run_as_owner = mode == "system"
        S.listen_ip = s.get("listen_ip", "0.0.0.0")
        if s.get("node_networks"):
            S.allowed_networks = list(s["node_networks"])
        S.dask_gateway_jobqueue_launcher = slurm_launcher(settings)
        S.slurm_conf = settings.get("slurm_conf") or ""
        S.gpu_workers = dict(settings.get("gpu_workers") or {})  # dask.slurm.gpu_workers
        if settings.get("node_address") or ip == "0.0.0.0":
            # schedulers on the nodes reach the API at hub.node_address (else this host's name)
            from afhub.hub_config.addresses import gateway_api_url

            host = settings.get("node_address") or socket.getfqdn()
            S.api_url = gateway_api_url(host, settings["port"], settings["prefix"])
        # Slurm jobs outlive the gateway: when the owners' servers stop with the hub, their
        # clusters' jobs are cancelled too (when servers survive a hub restart, so do clusters)
        S.stop_clusters_on_shutdown = not settings.get("servers_outlive_hub", False)
    return c


def main(argv=None) -> None:
    settings = settings_from_env()
    if settings.get("backend", "local") not in ("local", "slurm"):
        raise SystemExit(
            f"afhub dask gateway: the {settings['backend']} backend runs the gateway elsewhere"
        )
    os.makedirs(settings["data_dir"], mode=0o700, exist_ok=True)
    config = gateway_config(settings)
    key = ensure_generated(os.path.join(settings["data_dir"], "dask_gateway_db_key"), 16)
    config.DBBackendBase.db_encrypt_keys = [key]
    app = AfhubDaskGateway(config=config)
    app.afhub_settings = settings
    app.initialize(argv or [])
    app.start()
