"""The hub<->server contract: everything the hub tells a user server, named once.

The hub writes these (its values builders put them in ``Spawner.environment`` and
``Spawner.args``; the broker serves :data:`BROKER_ROUTE`), the user server reads them (the
token renewer, kernel discovery, the session panel). Both sides import this module, so it
imports the standard library only: no JupyterHub, no jupyter_server, no tornado.

What lives here: variable names, defaults, the token path template, the renewal rule
(:func:`effective_margin`), the broker route, and small functions that encode a setting into
variables (hub side, ``*_environment``) and decode it back (server side, ``read_*``). What
must not: anything that does I/O or knows about traitlets.

=============================  ==================================  ==========================
variable / name                written by (hub)                    read by (server)
=============================  ==================================  ==========================
``BEARER_TOKEN_FILE``          authenticator/auth_section.py       token_renewer.py
``AFHUB_TOKEN_REFRESH_MARGIN`` authenticator/auth_section.py       token_renewer.py
``X509_CERT_FILE``/``_DIR``    hub_config/data.py                  the XRootD client, OpenSSL
``AFHUB_DATA_ORIGIN``/``CACHE`` hub_config/data.py                  data_url (notebooks, tests)
``AFHUB_XROOTD_SESSIONS``      hub_config/data.py                  xrootd_sessions.py
``XRD_DATASERVERTTL``          hub_config/data.py                  the XRootD client
``AFHUB_DASK_TOKEN_WAIT``      hub_config/dask_section.py (clusters) dask_preload.py (scheduler)
``AFHUB_WORKER_GPUS``          dask_options.py (cluster config)    gateway/slurm.py (--gres)
``AFHUB_KERNELS_ENABLED``      hub_config/kernels_section.py       kernel_discovery.py
``AFHUB_KERNEL_ROOTS``         hub_config/kernels_section.py       kernel_discovery.py
``AFHUB_KERNELS_SCAN_HOME``    hub_config/kernels_section.py       kernel_discovery.py
``AFHUB_CONDA_ENVS_DIRS``      hub_config/kernels_section.py       kernel_discovery.py
``AFHUB_IMAGE_PREFIXES``       hub_config/kernels_section.py       kernel_discovery.py
``AFHUB_LAB_NEWS``             spawner/spawn_section.py            lab_settings.py
``AFHUB_PROFILE`` ... (session) spawner (``Resolved.env()``)        session.py
``AFHUB_DASK_ENABLED``         hub_config/dask_section.py          dask_handlers.py
``AFHUB_DASK_DASHBOARDS``      hub_config/dask_section.py          dask_dashboard.py
``DASK_GATEWAY__*``            hub_config/dask_section.py          dask_gateway (the client)
``DASK_GATEWAY__PUBLIC_...``   dask_dashboard.py (the server)      dask_gateway (the client)
broker route                   authenticator/handlers.py           token_renewer.py
=============================  ==================================  ==========================
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

# ---------------------------------------------------------------- data-access token

TOKEN_FILE = "BEARER_TOKEN_FILE"  # WLCG bearer token discovery reads this path
TOKEN_REFRESH_MARGIN = "AFHUB_TOKEN_REFRESH_MARGIN"

DEFAULT_TOKEN_PATH = "$XDG_RUNTIME_DIR/bt_u$UID"  # ``$UID``: the numeric uid, in the server
FALLBACK_TOKEN_PATH = "~/.afhub/tokens/bt_u$UID"  # where ``XDG_RUNTIME_DIR`` is unset
DEFAULT_REFRESH_MARGIN = 120  # seconds; the values schema's ``tokens.refresh_margin`` default

TOKEN_SCOPE = "custom:afhub-token"  # granted to a user's own server tokens only
# The broker, relative to the hub's API (``JUPYTERHUB_API_URL``), as a tornado pattern.
BROKER_ROUTE = r"/api/afhub/users/([^/]+)/token"


def broker_url(api_url: str, user: str) -> str:
    """The broker URL for ``user`` under the hub API URL a server is given."""
    return api_url.rstrip("/") + f"/afhub/users/{quote(user, safe='')}/token"


def effective_margin(margin: float, lifetime: float | None) -> float:
    """Renew ``margin`` s before expiry, but never earlier than 2/3 into a short lifetime.

    One rule for both sides: the hub refreshes from the provider, the server renews from the
    hub, so the server asks when the hub is ready to refresh."""
    if lifetime:
        return min(margin, lifetime / 3)
    return margin


def token_environment(*, file: str | None = None, margin: float | None = None) -> dict[str, str]:
    """Hub side: the variables that turn token delivery on in a server (paths and numbers
    only, never a token)."""
    if margin is None:
        margin = DEFAULT_REFRESH_MARGIN
    return {TOKEN_FILE: file or DEFAULT_TOKEN_PATH, TOKEN_REFRESH_MARGIN: _num(margin)}


@dataclass(frozen=True)
class TokenSettings:
    path_template: str
    margin: float


def read_token_settings(environ: Mapping[str, str]) -> TokenSettings | None:
    """Server side: the token path template and renewal margin, or None when the hub did not
    turn token delivery on (no ``BEARER_TOKEN_FILE``)."""
    template = environ.get(TOKEN_FILE)
    if not template:
        return None
    margin = environ.get(TOKEN_REFRESH_MARGIN)
    return TokenSettings(template, float(margin) if margin else float(DEFAULT_REFRESH_MARGIN))


# ---------------------------------------------------------------- data (the token's consumer)

# CA trust for TLS to the storage (the XRootD client's and OpenSSL's own variables)
CA_FILE = "X509_CERT_FILE"
CA_DIR = "X509_CERT_DIR"
DATA_ORIGIN = "AFHUB_DATA_ORIGIN"  # root://host:port of the origin (reads and writes)
DATA_CACHE = "AFHUB_DATA_CACHE"  # root://host:port of the XCache (where to read)
DATA_SAMPLES = "AFHUB_DATA_SAMPLES"  # namespace path of the sample data
DATA_AUDIENCE = "AFHUB_DATA_AUDIENCE"  # the token audience the storage accepts (the sidebar's test)
# "per-token": XRootD clients in kernels and on workers open one connection per token
# generation (server_ext/xrootd_sessions.py), so reads survive renewals
XROOTD_SESSIONS = "AFHUB_XROOTD_SESSIONS"
XROOTD_SESSIONS_PER_TOKEN = "per-token"
# the XRootD client's idle time before it closes a connection to a data server (its default
# is 300 s): connections of an older token generation close within the renewal margin
XROOTD_TTL = "XRD_DATASERVERTTL"
# seconds a Dask scheduler holds a joining worker until the user's server has registered the
# data-access token plugin (server_ext/dask_token.py), so no task runs without the token
DASK_TOKEN_WAIT = "AFHUB_DASK_TOKEN_WAIT"
DEFAULT_DASK_TOKEN_WAIT = 30  # below the gateway's worker_start_timeout (60 s)
# GPUs per Dask worker, in a cluster's environment (server_ext/dask_options.py cluster_config):
# the Slurm gateway backend requests them (--gres), the worker's own code may read them
WORKER_GPUS = "AFHUB_WORKER_GPUS"


def xrootd_ttl(margin: float | None) -> int:
    """``XRD_DATASERVERTTL`` for a token renewal margin: idle connections of an older token
    close before it expires (30 s at least, never above the client's own 300 s)."""
    if margin is None:
        margin = DEFAULT_REFRESH_MARGIN
    return int(max(30, min(300, margin)))


def data_environment(
    *,
    origin: str | None = None,
    cache: str | None = None,
    ca_file: str | None = None,
    ca_dir: str | None = None,
    samples: str | None = None,
    audience: str | None = None,
    margin: float | None = None,
) -> dict[str, str]:
    """Hub side: where the facility's storage is and which CA to trust (unknowns left out),
    and how XRootD clients keep reading across token renewals (``margin``: the renewal
    margin, s). The token itself is found by the client's WLCG discovery of
    ``BEARER_TOKEN_FILE``."""
    pairs = (
        (DATA_ORIGIN, origin),
        (DATA_CACHE, cache),
        (CA_FILE, ca_file),
        (CA_DIR, ca_dir),
        (DATA_SAMPLES, samples),
        (DATA_AUDIENCE, audience),
        (XROOTD_SESSIONS, XROOTD_SESSIONS_PER_TOKEN),
        (XROOTD_TTL, str(xrootd_ttl(margin))),
    )
    return {
        name: value.rstrip("/") if name in (DATA_ORIGIN, DATA_CACHE) else value
        for name, value in pairs
        if value
    }


DATA_VARIABLES = (
    DATA_ORIGIN,
    DATA_CACHE,
    CA_FILE,
    CA_DIR,
    DATA_SAMPLES,
    DATA_AUDIENCE,
    XROOTD_SESSIONS,
    XROOTD_TTL,
)


def read_data_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Server side: the data variables the hub set (what a server hands on to its Dask
    workers; paths and addresses only, never a token)."""
    return {name: environ[name] for name in DATA_VARIABLES if environ.get(name)}


def data_endpoints(environ: Mapping[str, str]) -> dict[str, str]:
    """Server side: ``{"cache": root://..., "origin": root://...}`` as configured."""
    pairs = (("cache", DATA_CACHE), ("origin", DATA_ORIGIN))
    return {name: environ[var].rstrip("/") for name, var in pairs if environ.get(var)}


def data_url(environ: Mapping[str, str], path: str) -> str | None:
    """Server side: ``root://`` URL of ``path`` at the cache (else the origin), or None."""
    base = environ.get(DATA_CACHE) or environ.get(DATA_ORIGIN)
    return f"{base.rstrip('/')}//{path.lstrip('/')}" if base else None


# ---------------------------------------------------------------- kernel discovery

KERNELS_ENABLED = "AFHUB_KERNELS_ENABLED"
KERNEL_ROOTS = "AFHUB_KERNEL_ROOTS"
KERNELS_SCAN_HOME = "AFHUB_KERNELS_SCAN_HOME"
CONDA_ENVS_DIRS = "AFHUB_CONDA_ENVS_DIRS"
IMAGE_PREFIXES = "AFHUB_IMAGE_PREFIXES"

DEFAULT_KERNEL_ROOTS = ("~/envs", "~/.virtualenvs", "~/.venvs")
DEFAULT_IMAGE_PREFIXES = ("/opt/conda/envs", "/opt/micromamba/envs")

# ``jupyterhub-singleuser`` loads the extension even where its config file was not installed
SERVER_EXTENSION_ARG = "--ServerApp.jpserver_extensions=afhub.server_ext=True"


def kernel_environment(
    *,
    enabled: bool = True,
    scan_home: bool = True,
    roots: Iterable[str] | None = None,
    conda_envs_dirs: Iterable[str] | None = None,
    image_prefixes: Iterable[str] | None = None,
) -> dict[str, str]:
    """Hub side: kernel discovery settings; lists left out (None or empty) keep the server's
    defaults."""
    env = {KERNELS_ENABLED: "1" if enabled else "0"}
    if not scan_home:
        env[KERNELS_SCAN_HOME] = "0"
    for var, items in (
        (KERNEL_ROOTS, roots),
        (CONDA_ENVS_DIRS, conda_envs_dirs),
        (IMAGE_PREFIXES, image_prefixes),
    ):
        if items:
            env[var] = os.pathsep.join(items)
    return env


def read_list(environ: Mapping[str, str], var: str, fallback: Iterable[str]) -> list[str]:
    """Server side: an ``os.pathsep``-separated list, ``fallback`` when the variable is unset."""
    value = environ.get(var)
    if value is None:
        return list(fallback)
    return [p for p in value.split(os.pathsep) if p]


def read_bool(environ: Mapping[str, str], var: str, fallback: bool) -> bool:
    """Server side: a flag; 0/false/no/off/empty are false, ``fallback`` when unset."""
    value = environ.get(var)
    if value is None:
        return fallback
    return value.strip().lower() not in ("0", "false", "no", "off", "")


# ---------------------------------------------------------------- JupyterLab

# "1": JupyterLab's own news question and feed (values ``singleuser.lab_news``); unset or "0":
# afhub makes "no news" the default of the setting (lab_settings.py)
LAB_NEWS = "AFHUB_LAB_NEWS"


# ---------------------------------------------------------------- the session

# what the server runs on, as resolved from the user's profile choice at start
SESSION = {
    "profile": "AFHUB_PROFILE",
    "display_name": "AFHUB_PROFILE_DISPLAY_NAME",
    "image": "AFHUB_IMAGE",
    "image_name": "AFHUB_IMAGE_NAME",  # the catalogue name (Dask's ``image`` option)
    "arch": "AFHUB_ARCH",
    "gpu_count": "AFHUB_GPU",
    "gpu_type": "AFHUB_GPU_TYPE",
    "cpu": "AFHUB_CPU",
    "memory": "AFHUB_MEMORY",
}


def session_environment(
    *,
    profile: str,
    display_name: str,
    gpu_count: int = 0,
    image: str | None = None,
    image_name: str | None = None,
    arch: str | None = None,
    gpu_type: str | None = None,
    cpu: float | None = None,
    memory: str | None = None,
) -> dict[str, str]:
    """Hub side: the session variables of one start (unknown facts are left out)."""
    env = {
        SESSION["profile"]: profile,
        SESSION["display_name"]: display_name,
        SESSION["gpu_count"]: str(gpu_count),
    }
    if image:
        env[SESSION["image"]] = image
    if image_name:
        env[SESSION["image_name"]] = image_name
    if arch:
        env[SESSION["arch"]] = arch
    if gpu_count and gpu_type:
        env[SESSION["gpu_type"]] = gpu_type
    if cpu is not None:
        env[SESSION["cpu"]] = _num(cpu)
    if memory is not None:
        env[SESSION["memory"]] = memory
    return env


# ---------------------------------------------------------------- Dask Gateway

DASK_ENABLED = "AFHUB_DASK_ENABLED"
# "proxy": the gateway answers afhub's dashboard route and serves no public dashboard; the
# server proxies its user's dashboards (unset: dashboards are wherever the gateway serves them)
DASK_DASHBOARDS = "AFHUB_DASK_DASHBOARDS"
# dask config through the environment (``DASK_GATEWAY__X`` is ``gateway.x``), as daskhub sets
DASK_GATEWAY_ADDRESS = "DASK_GATEWAY__ADDRESS"
DASK_GATEWAY_PROXY_ADDRESS = "DASK_GATEWAY__PROXY_ADDRESS"
# the base of ``cluster.dashboard_link``: written by the server (it knows its own base URL)
DASK_GATEWAY_PUBLIC_ADDRESS = "DASK_GATEWAY__PUBLIC_ADDRESS"
DASK_GATEWAY_AUTH = "DASK_GATEWAY__AUTH__TYPE"
# the default of the cluster ``image`` option; the server sets it from ``AFHUB_IMAGE_NAME``
DASK_DEFAULT_IMAGE = "DASK_GATEWAY__CLUSTER__OPTIONS__IMAGE"
# the server's dashboard proxy under its base URL; the gateway's own route (``/clusters/<name>``,
# what the dask-gateway client appends to ``public_address``) follows it
DASK_DASHBOARD_PATH = "afhub/dask"
# the gateway's route telling a cluster's owner where its dashboard listens
DASK_DASHBOARD_ROUTE = "/api/v1/afhub/clusters/{name}/dashboard"
# the header carrying a cluster's dashboard secret (:func:`dask_dashboard_secret`): the owner's
# server sends it with every request it relays; the scheduler's HTTP server
# (``dask_dashboard_guard``) refuses requests without it
DASK_DASHBOARD_SECRET_HEADER = "X-Afhub-Dashboard-Secret"
_DASHBOARD_SECRET_LABEL = b"afhub dask dashboard v1"


def dask_dashboard_secret(tls_key: bytes | str) -> str:
    """A cluster's dashboard secret, derived from its TLS key (the PEM the gateway stores and
    the scheduler reads from its key file; whoever holds the key controls the cluster anyway).
    Never written to a file, an argument or a log: each side derives it when needed."""
    import hashlib
    import hmac

    key = (tls_key.encode() if isinstance(tls_key, str) else bytes(tls_key)).strip()
    if not key:
        raise ValueError("a cluster's dashboard secret needs its TLS key")
    return hmac.new(key, _DASHBOARD_SECRET_LABEL, hashlib.sha256).hexdigest()


def dask_environment(
    *, address: str, proxy_address: str, dashboards_proxied: bool = True
) -> dict[str, str]:
    """Hub side: what makes the stock ``dask_gateway.Gateway()`` work with no arguments
    (JupyterHub auth with the server's own ``JUPYTERHUB_API_TOKEN``). ``public_address`` is
    the server's to set (:func:`dask_public_address`) where dashboards are proxied."""
    env = {
        DASK_GATEWAY_ADDRESS: address,
        DASK_GATEWAY_PROXY_ADDRESS: proxy_address,
        DASK_GATEWAY_AUTH: "jupyterhub",
        DASK_ENABLED: "1",
    }
    if dashboards_proxied:
        env[DASK_DASHBOARDS] = "proxy"
    return env


def read_dask_dashboards_proxied(environ: Mapping[str, str]) -> bool:
    """Server side: whether this server proxies its user's dashboards."""
    return environ.get(DASK_DASHBOARDS, "") == "proxy"


def dask_public_address(base_url: str) -> str:
    """Server side: ``public_address`` for the dask-gateway client, so that
    ``cluster.dashboard_link`` is ``{base_url}afhub/dask/clusters/<name>/status``."""
    return "/" + "/".join(p for p in (base_url.strip("/"), DASK_DASHBOARD_PATH) if p)


def read_dask_enabled(environ: Mapping[str, str]) -> bool:
    """Server side: whether the hub runs a Dask Gateway for this server."""
    return read_bool(environ, DASK_ENABLED, False)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# every variable name above (the hub's to set: ``singleuser.env`` may not)
VARIABLES = tuple(
    sorted(
        {
            value
            for name, value in list(globals().items())
            if name.isupper() and isinstance(value, str) and value.isupper() and " " not in value
        }
        | set(SESSION.values())
    )
)
