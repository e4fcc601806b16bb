"""Data-access token in the user's server: path, schedule, status, and the atomic file write.

Pure functions (no I/O) except :func:`write_token_file`, which is the only place that touches
the token file. Nothing here logs or returns the token itself: the status model carries
expiry, audience, last refresh and last error only. The renewal loop lives in
``token_renewer.py``, the REST handler in ``token_handlers.py``.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from dataclasses import dataclass

from .contract import DEFAULT_TOKEN_PATH, FALLBACK_TOKEN_PATH, effective_margin

_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


class TokenPathError(ValueError):
    """``BEARER_TOKEN_FILE`` cannot be turned into a usable absolute path."""


_UID = re.compile(r"\$\{UID\}|\$UID(?![A-Za-z0-9_])")


def resolve_token_path(template: str, *, uid: int, home: str, environ: dict) -> str:
    """The token file path for ``BEARER_TOKEN_FILE`` template ``template``.

    ``$UID`` (as in the shell) becomes ``uid``; ``~`` becomes ``home``; any other ``$VAR`` is
    read from ``environ``. A template using ``$XDG_RUNTIME_DIR`` while it is unset falls back
    to ``~/.afhub/tokens/bt_u$UID`` (WLCG bearer token discovery reads ``BEARER_TOKEN_FILE``
    first, so any path works). No braces: KubeSpawner expands ``{...}`` in pod environments.
    """
    template = template or DEFAULT_TOKEN_PATH
    if "XDG_RUNTIME_DIR" in template and not environ.get("XDG_RUNTIME_DIR"):
        template = FALLBACK_TOKEN_PATH
    path = _UID.sub(str(uid), template)
    if path == "~" or path.startswith("~/"):
        path = home.rstrip("/") + path[1:]

    def var(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if not environ.get(name):
            raise TokenPathError(f"BEARER_TOKEN_FILE {template!r}: ${name} is not set")
        return environ[name]

    path = _VAR.sub(var, path)
    if not os.path.isabs(path):
        raise TokenPathError(f"BEARER_TOKEN_FILE {template!r}: not an absolute path ({path!r})")
    return os.path.normpath(path)


def renew_delay(
    *, expires_in: float, lifetime: float | None, margin: float, floor: float = 1.0
) -> float:
    """Seconds from now until the next renewal of a token that expires in ``expires_in`` s."""
    return max(floor, expires_in - effective_margin(margin, lifetime) + 0.5)


def retry_delay(failures: int, *, lifetime: float | None, base: float = 1.0) -> float:
    """Backoff after ``failures`` consecutive failures: 1, 2, 4... s, capped at a quarter of
    the token lifetime (between 2 s and 60 s), so recovery is noticed well before expiry."""
    cap = min(60.0, max(2.0, (lifetime or 240) / 4))
    return min(cap, base * 2 ** max(0, failures - 1))


@dataclass
class TokenStatus:
    """What the server knows about its token; everything but the token itself."""

    path: str = ""
    state: str = "starting"  # starting | ok | refresh_failing | login_required | disabled
    expires_at: float | None = None
    lifetime: float | None = None
    audience: str | None = None
    scope: str | None = None
    last_refresh: float | None = None
    last_attempt: float | None = None
    last_error: str | None = None
    next_attempt: float | None = None
    failures: int = 0
    renewals: int = 0

    def model(self, *, now: float) -> dict:
        valid = self.expires_at is not None and self.expires_at > now
        messages = {
            "starting": "fetching the first token",
            "ok": "token is fresh",
            "refresh_failing": "refresh is failing; the last token is kept while it is valid",
            "login_required": "log in to the hub again to renew the token",
            "disabled": "token delivery is not enabled on this server",
        }
        return {
            "state": self.state,
            "message": messages.get(self.state, self.state),
            "path": self.path,
            "valid": valid,
            "expires_at": self.expires_at,
            "expires_in": max(0, int(self.expires_at - now)) if self.expires_at else None,
            "audience": self.audience,
            "scope": self.scope,
            "last_refresh": self.last_refresh,
            "last_attempt": self.last_attempt,
            "last_error": self.last_error,
            "next_attempt": self.next_attempt,
            "failures": self.failures,
            "renewals": self.renewals,
        }


def _ensure_private_dir(directory: str) -> None:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.stat(directory)
    if stat.S_IMODE(st.st_mode) & 0o077:
        if st.st_uid != os.getuid():
            raise PermissionError(f"token directory {directory} is open to others and not ours")
        os.chmod(directory, 0o700)


def write_token_file(path: str, token: str) -> None:
    """Write ``token`` to ``path`` atomically: a 0600 temp file in the same 0700 directory,
    fsynced, then renamed over ``path``. Readers see the old or the new token, never half."""
    directory = os.path.dirname(path) or "."
    _ensure_private_dir(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".bt-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        data = (token.strip() + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
