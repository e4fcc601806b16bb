"""What ``singleuser.env`` may hold: pure rules, used by ``afhub check`` (spawner/spawn_section.py).

Two kinds of entries are refused. Variables the hub or the spawner owns: overriding
``JUPYTERHUB_API_URL`` would send the server's hub token elsewhere, ``HOME``/``USER`` would
point a server at another user's files, ``BEARER_TOKEN_FILE`` and the ``AFHUB_*`` contract
would move the data token. And secrets written inline: a name that looks like a secret
(``*_SECRET*``, ``*_TOKEN``, ``*_PASSWORD``, keys, credentials) or a value that looks like a
token (a JWT): values files are read by many (git, ConfigMaps, ``afhub render``) and a server's
environment is visible to everything running in it.
"""

from __future__ import annotations

import re

from afhub.server_ext import contract

# set by JupyterHub, the spawner or afhub for every server
OWNED_NAMES = frozenset(
    {
        "HOME",
        "USER",
        "LOGNAME",
        "SHELL",
        "CPU_LIMIT",
        "CPU_GUARANTEE",
        "MEM_LIMIT",
        "MEM_GUARANTEE",
        "JUPYTER_IMAGE",
        "JUPYTER_IMAGE_SPEC",
        "BEARER_TOKEN",
        *contract.VARIABLES,
    }
)
OWNED_PREFIXES = ("JUPYTERHUB_", "JPY_", "AFHUB_", "DASK_GATEWAY__")
_SECRET_NAME = re.compile(
    r"SECRET|TOKEN|PASSWORD|PASSWD|PASSPHRASE|PRIVATE_?KEY|API_?KEY|ACCESS_?KEY|CREDENTIAL",
    re.I,
)
_NOT_A_SECRET = re.compile(r"_(FILE|PATH|DIR|URL|URI)$", re.I)  # where a secret is, not it
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")

SECRET_ADVICE = (
    "secrets do not belong in singleuser.env (the values file is widely readable and a "
    "server's environment is visible to all its processes): give servers a secret as a file, "
    "e.g. a Kubernetes Secret volume through kubespawner_override volumes/volume_mounts; "
    "hub-side secrets are written {env: VAR} or {file: PATH} where the values file takes them"
)


def looks_secret(name: str, value: object = None) -> bool:
    """A variable whose name looks like a secret's (``*_TOKEN``, ``*SECRET*``, ...; not
    ``*_FILE``/``*_PATH``/...) or whose value looks like a token (a JWT)."""
    upper = name.upper()
    if _SECRET_NAME.search(upper) and not _NOT_A_SECRET.search(upper):
        return True
    return isinstance(value, str) and bool(_JWT.search(value))


# CA trust is the data section's: one owner for servers, Dask workers and batch jobs
_DATA_KEYS = {contract.CA_FILE: "ca_file", contract.CA_DIR: "ca_dir"}


def env_problem(name: str, value: object) -> str | None:
    """Why ``singleuser.env.<name>: <value>`` is refused (``None``: allowed)."""
    upper = name.upper()
    if upper in _DATA_KEYS:
        return (
            f"the hub sets this variable itself from data.{_DATA_KEYS[upper]} (the storage's CA, "
            f"for servers, workers and jobs alike); set data.{_DATA_KEYS[upper]} instead"
        )
    if upper in OWNED_NAMES or upper.startswith(OWNED_PREFIXES):
        return (
            "the hub sets this variable itself for every server (tokens, kernels, the profile, "
            "the user's account); remove it here"
        )
    if _SECRET_NAME.search(upper) and not _NOT_A_SECRET.search(upper):
        return f"looks like a secret; {SECRET_ADVICE}"
    if isinstance(value, str) and _JWT.search(value):
        return f"the value looks like a token (a JWT); {SECRET_ADVICE}"
    return None
