"""Resolve secret values from the values file: inline, ``{env: VAR}`` or ``{file: PATH}``.

Also creates the per-facility secrets ``afhub up`` keeps in its data dir (cookie secret,
crypt key, client secret), written 0600 and reused across restarts.
"""

from __future__ import annotations

import os
import secrets as _secrets
from typing import Any

from .problems import Problem, ValuesError

MASK = "***"


def describe(value: Any) -> str:
    """A masked description of a secret value, safe to print."""
    if isinstance(value, dict) and "env" in value:
        return f"<secret from env {value['env']}>"
    if isinstance(value, dict) and "file" in value:
        return f"<secret from file {value['file']}>"
    return MASK


def resolve(value: Any, path: str, environ: dict[str, str] | None = None) -> str:
    """The secret's text; a :class:`ValuesError` naming ``path`` when it cannot be read."""
    environ = os.environ if environ is None else environ
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "env" in value:
        name = value["env"]
        if name not in environ or not environ[name]:
            raise ValuesError([Problem(path, f"environment variable {name} is not set")])
        return environ[name]
    if isinstance(value, dict) and "file" in value:
        fname = os.path.expanduser(value["file"])
        try:
            with open(fname, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError as e:
            raise ValuesError(
                [Problem(path, f"cannot read secret file {fname} ({e.strerror})")]
            ) from None
        if not text:
            raise ValuesError([Problem(path, f"secret file {fname} is empty")])
        return text
    raise ValuesError([Problem(path, "a secret must be a string, {env: VARIABLE} or {file: PATH}")])


def write_file(
    path: str,
    data: str | bytes,
    *,
    mode: int = 0o600,
    uid: int | None = None,
    gid: int | None = None,
) -> None:
    """Write ``data`` to ``path`` atomically, with ``mode`` from the first byte (no readable
    window) and owned by ``uid``/``gid`` when given; a link at ``path`` is replaced, never
    followed. The one writer of afhub's own files (secrets, keys, the storage's configs)."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        if uid is not None:
            os.fchown(f.fileno(), uid, -1 if gid is None else gid)
    os.replace(tmp, path)


def write_private(path: str, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte (:func:`write_file`)."""
    write_file(path, text)


def ensure_generated(path: str, nbytes: int = 32) -> str:
    """Read a generated hex secret from ``path``, creating it (0600) the first time."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
        if text:
            if os.stat(path).st_mode & 0o077:
                os.chmod(path, 0o600)
            return text
    except FileNotFoundError:
        pass
    text = _secrets.token_hex(nbytes)
    write_private(path, text + "\n")
    return text
