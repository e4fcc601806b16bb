"""The Dask Gateway process (a hub-managed service): ``python -m afhub.hub_config.gateway``.

The hub starts it with ``AFHUB_DASK_SETTINGS`` (JSON from ``hub_config/dask_section.py``: the values'
``dask`` section, the image catalogue, the server environment prefix, ports, the data dir) and
its own ``JUPYTERHUB_API_*``. Here that becomes dask-gateway-server configuration, one job per
module:

- ``process.py``: the entry point (``main``), the settings from the environment, the
  ``AfhubDaskGateway`` application and ``gateway_config`` (settings -> dask-gateway ``Config``);
- ``auth.py``: ``AfhubGatewayAuthenticator``, JupyterHub auth with service access scopes; a
  token whose model hides the user's groups gets them from the hub with the gateway's own token
  (groups decide the limits);
- ``options.py``: ``cluster_options(settings)``, the options handler built from the shared
  Dask option definitions (per-group limits, images the user may use), enforced here, whatever
  the client sends;
- ``clusters.py``: ``OwnedClusters``, mixed into every backend: ``max_clusters``, the owner
  check, stopping the clusters of users whose servers have stopped, the dashboard guard preload
  and the address checks of what schedulers report;
- ``user_env.py``: *pure* rules of the ``environment`` option (a cluster in the owner's own
  venv or conda environment): inside the owner's home, what it lacks to run workers; the
  ownership walk and the probe as the owner are ``OwnedClusters.user_environment``;
- ``networks.py``: *pure* address rules: addresses clusters report (scheduler, API, dashboard)
  are used only inside the backend's ``allowed_networks`` (loopback for local clusters,
  ``dask.slurm.node_networks``): a scheduler cannot point the gateway's proxy or API calls at
  another service;
- ``local.py``: ``AfhubLocalBackend``, schedulers and workers as processes in the chosen
  image's environment prefix, as the owner's account when there are per-user accounts;
- ``workdir.py``: the local clusters' working directories, made by a gateway that may be root;
- ``slurm.py``: ``AfhubSlurmBackend``, schedulers and workers as Slurm jobs of the owner's
  system account (sudo + dask-gateway's launcher, private staging directory, secrets only in
  the exported environment);
- ``routes.py``: afhub's routes of the gateway API: the caller's limits, and the dashboard of
  the owner's own cluster (the gateway's proxy gets no public route to a dashboard; the owner's
  server proxies it, ``server_ext/dask_dashboard.py``, with the secret without which its
  scheduler's HTTP server answers nothing, ``server_ext/dask_dashboard_guard.py``).

Operators may add raw dask-gateway configuration in ``<data dir>/dask_gateway_config.py``.
What must not live here: values checking or the hub's configuration (``hub_config/dask_section.py``),
anything a user server imports. Importing this package imports nothing (the modules import
dask-gateway-server).
"""
