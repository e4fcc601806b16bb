"""Secrets a batch job needs, handed over outside the scheduler.

Pure: names, file text and shell command lines; the spawner (:mod:`.lifecycle`) runs them.

A scheduler keeps what it is given and shows it to more people than the job's owner: HTCondor
copies the submitting environment into the job ClassAd (``GetEnv = True``; ``condor_q -long``
shows it to other users of the schedd), Slurm stores the exported environment with the job
(slurmctld's state directory, and slurmdbd on sites with ``AccountingStoreFlags=job_env``,
where ``sacct --env-vars`` shows it). So the server's hub API token, and any variable that
looks like a secret (:func:`afhub.spawner.env_rules.looks_secret`), never reaches
``sbatch``/``condor_submit``. The hub writes them, *as the user's account* (``exec_prefix``,
so a root-squashed NFS home works and nobody else's symlink is followed), to a file only that
account can read: ``<home>/.afhub/batch/<server>/<nonce>.env``, mode 0600 in 0700 directories.
The job's command starts with a ``/bin/sh`` reader (:data:`READER`) that exports the variables,
deletes the file and execs the server; only the file's path is in the job description.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from collections.abc import Mapping

from afhub.server_ext import contract

from ..env_rules import looks_secret

SECRETS_DIR = ".afhub/batch"  # under the account's home directory
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"^/[A-Za-z0-9_./@+-]+$")
_LABEL = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
_NONCE = re.compile(r"^[0-9a-f]{8,64}$")

# Exports NAME=VALUE lines of the file "$1", deletes it and execs the rest of the arguments.
# No eval: each line is one argument of `export`. A missing file (a job started twice, or one
# whose start the hub already gave up) ends the job with a message in its log.
READER = (
    'f=$1; shift; [ -f "$f" ] || { echo "afhub: the server credentials file $f is missing" >&2; '
    'exit 1; }; while IFS= read -r l; do export "$l"; done < "$f"; rm -f "$f"; exec "$@"'
)


def split_env(env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(public, secret)``: the variables that may reach the scheduler, and the others (the
    hub<->server contract's names, such as ``AFHUB_TOKEN_REFRESH_MARGIN``, are settings)."""
    public: dict[str, str] = {}
    secret: dict[str, str] = {}
    for name, value in env.items():
        hidden = looks_secret(name, value) and name not in contract.VARIABLES
        (secret if hidden else public)[name] = value
    return public, secret


def secrets_text(secret: Mapping[str, str]) -> str:
    """The file's text: one ``NAME=VALUE`` line per variable (what :data:`READER` reads)."""
    lines = []
    for name, value in sorted(secret.items()):
        if not _NAME.match(name):
            raise ValueError(f"{name!r} cannot be an environment variable name")
        if not isinstance(value, str) or "\n" in value or "\0" in value:
            raise ValueError(f"the value of {name} cannot be written on one line")
        lines.append(f"{name}={value}\n")
    return "".join(lines)


def server_label(server_name: str) -> str:
    """A file-name-safe label for a server: ``.default``, the server's name, or ``.<hash>`` of
    it (names never start with a dot, so the three cannot collide)."""
    if not server_name:
        return ".default"
    if _LABEL.match(server_name):
        return server_name
    return "." + hashlib.sha256(server_name.encode("utf-8")).hexdigest()[:16]


def secrets_path(home: str, server_name: str, nonce: str) -> str:
    """``<home>/.afhub/batch/<server label>/<nonce>.env``; ValueError for an unusable home."""
    if not _PATH.match(home or "") or ".." in home.split("/"):
        raise ValueError(f"home directory {home!r} cannot hold the server's credentials file")
    if not _NONCE.match(nonce):
        raise ValueError("nonce must be lower-case hex")
    return posixpath.join(home, SECRETS_DIR, server_label(server_name), f"{nonce}.env")


def _checked(path: str) -> str:
    if not _PATH.match(path) or not path.endswith(".env") or f"/{SECRETS_DIR}/" not in path:
        raise ValueError(f"{path!r} is not a credentials file path")
    return path


def write_command(path: str) -> str:
    """Shell command (run as the account) writing stdin to ``path``: 0700 directories, a 0600
    file; the same server's earlier files are removed first."""
    path = _checked(path)
    server_dir = posixpath.dirname(path)
    batch_dir = posixpath.dirname(server_dir)
    script = (
        f"umask 077 && mkdir -p {server_dir} && chmod 700 {batch_dir} {server_dir} && "
        f"rm -f {server_dir}/*.env && cat > {path}"
    )
    return "/bin/sh -c " + shlex.quote(script)


def remove_command(path: str) -> str:
    """Shell command (run as the account) removing the credentials file."""
    return "rm -f " + shlex.quote(_checked(path))


def reader_argv(path: str, cmd: list[str] | tuple[str, ...]) -> list[str]:
    """``cmd`` started through :data:`READER` with the credentials file ``path``."""
    return ["/bin/sh", "-c", READER, "afhub-job", _checked(path), *cmd]
