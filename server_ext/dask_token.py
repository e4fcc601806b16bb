"""The data-access token on Dask workers: a worker plugin that writes it to a 0600 file.

``BearerTokenPlugin(token)`` is registered on a cluster by the user's server (``dask_sync.py``
after each renewal and for each new cluster, ``dask.py``'s ``new_cluster``). The scheduler
keeps it and runs its ``setup`` on every worker, including workers added later by scaling:
the token goes to ``<worker local directory>/afhub-token/bt`` (0600 in a 0700 directory,
written atomically by ``token.write_token_file``) and the worker process's
``BEARER_TOKEN_FILE`` names that file, so tasks find it the WLCG way. The plugin also carries
the server's data contract (CA trust, endpoints), which fills in what the worker's own
environment lacks, and turns on one XRootD connection per token generation
(``xrootd_sessions.py``). Schedulers hold joining workers until the plugin is there
(``dask_token_gate.py``). The token travels over
the cluster's TLS connection only: never in argv, environment values or logs; the plugin's
repr hides it. Only stdlib and distributed imports: this module runs on workers.
"""

from __future__ import annotations

import os

from distributed.diagnostics.plugin import WorkerPlugin

from . import contract
from .token import token_digest, write_token_file  # noqa: F401  (token_digest re-exported)

PLUGIN_NAME = "afhub-bearer-token"


def worker_token_path(local_directory: str) -> str:
    return os.path.join(local_directory, "afhub-token", "bt")


def worker_environment(worker_env: dict, server_env: dict) -> dict[str, str]:
    """The server's data variables a worker lacks: its own environment (the cluster's, from
    the gateway) wins, and a CA path that does not exist on the worker is left out."""
    out = {}
    for name, value in server_env.items():
        if name in worker_env:
            continue
        if name in (contract.CA_FILE, contract.CA_DIR) and not os.path.exists(value):
            continue
        out[name] = value
    return out


class BearerTokenPlugin(WorkerPlugin):
    name = PLUGIN_NAME

    def __init__(self, token: str, environment: dict | None = None):
        self._token = token
        self.digest = token_digest(token)
        # the server's data contract (CA trust, endpoints, XRootD client settings): paths and
        # addresses only (``contract.read_data_environment``)
        self.environment = dict(environment or {})

    def __repr__(self) -> str:
        return f"<BearerTokenPlugin {self.digest}>"

    def setup(self, worker):
        path = worker_token_path(os.path.abspath(worker.local_directory))
        write_token_file(path, self._token)
        os.environ.update(worker_environment(dict(os.environ), self.environment))
        os.environ[contract.TOKEN_FILE] = path
        # new XRootD connections per token generation (reads survive renewals)
        from .xrootd_sessions import install

        install()
