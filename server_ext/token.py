"""Data-access token in the user's server: path, schedule, status, and the atomic file write.

Pure functions (no I/O) except :func:`write_token_file`, which is the only place that touches
the token file. Where it may live is one rule, :func:`token_path_problem`, shared by
``afhub check`` (``tokens.file``) and the server: a per-user location only. The writer never
follows a symlink someone else planted, never changes a directory it did not create, and
refuses a directory others can write to. Nothing here logs or returns the token itself: the status model carries
expiry, audience, last refresh and last error only. The renewal loop lives in
``token_renewer.py``, the REST handler in ``token_handlers.py``.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass

from .contract import DEFAULT_TOKEN_PATH, FALLBACK_TOKEN_PATH, effective_margin


def token_digest(token: str) -> str:
    """A short fingerprint to tell tokens apart in state and logs (not the token)."""
    import hashlib

    return hashlib.sha256(token.encode()).hexdigest()[:12]


_VAR = re.compile(r"\$(\w+)|\$\{(\w+)\}")


class TokenPathError(ValueError):
    """``BEARER_TOKEN_FILE`` cannot be turned into a usable absolute path."""


_UID = re.compile(r"\$\{UID\}|\$UID(?![A-Za-z0-9_])")
_PER_USER_ROOTS = re.compile(r"^(\$XDG_RUNTIME_DIR|\$\{XDG_RUNTIME_DIR\}|~|\$HOME|\$\{HOME\})/")
# system locations a token never goes to, even in a directory named after the uid
SYSTEM_DIRS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/proc",
    "/root", "/run", "/sbin", "/sys", "/usr", "/var",
)  # fmt: skip


def token_path_problem(template: str) -> str | None:
    """Why ``BEARER_TOKEN_FILE`` template ``template`` is not a safe place (``None``: it is).

    The token must land in a per-user location: under ``$XDG_RUNTIME_DIR``, ``~`` or
    ``$HOME``, or in a directory whose name contains ``$UID`` (``/scratch/$UID/bt``,
    ``/run/user/$UID/bt``). A file in a shared directory (``/tmp/bt_u$UID``: anyone may plant
    a link or a directory there first), system locations and ``..`` segments are refused.
    """
    if not template:
        return None  # the default, $XDG_RUNTIME_DIR/bt_u$UID
    if "\0" in template or "\n" in template:
        return "must not contain control characters"
    segments = template.split("/")
    if any(seg in ("..", ".") for seg in segments[1:]):
        return "must not contain '.' or '..' segments"
    if template.endswith("/") or not segments[-1]:
        return "must name a file, not a directory"
    if _PER_USER_ROOTS.match(template):
        return None
    directory = template.rsplit("/", 1)[0]
    if not _UID.search(directory):
        return (
            "must be a per-user location: under $XDG_RUNTIME_DIR, ~ or $HOME, or in a directory "
            "named after the user id, e.g. /scratch/$UID/bt (a file in a shared directory such "
            "as /tmp can be taken over by another user)"
        )
    if template.startswith("/run/user/"):
        return None
    for system in SYSTEM_DIRS:
        if template == system or template.startswith(system + "/"):
            return f"must not be in the system directory {system}"
    return None


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

    problem = token_path_problem(template)
    if problem:
        raise TokenPathError(f"BEARER_TOKEN_FILE {template!r}: {problem}")
    path = _VAR.sub(var, path)
    if not os.path.isabs(path):
        raise TokenPathError(f"BEARER_TOKEN_FILE {template!r}: not an absolute path ({path!r})")
    if any(seg in ("..", ".") for seg in path.split("/")[1:]):
        raise TokenPathError(f"BEARER_TOKEN_FILE {template!r}: '..' in {path!r}")
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


class TokenDirError(PermissionError):
    """The token's directory is not safe to write in (names the path and why)."""


_SEARCH_ONLY = getattr(os, "O_PATH", os.O_RDONLY)


def _open_private_dir(directory: str, *, owner: int | None = None, create: bool = True) -> int:
    """A file descriptor of ``directory``, walked from ``/`` one component at a time.

    ``owner``: the account the directory is for (default: ours). Missing components are
    created (mode 0700) and become ours (``create=False``: FileNotFoundError instead); nothing
    that exists is ever chmod-ed. A symlink on the way is followed only if root or the owner
    owns it, and then its target is walked the same way. Every directory on the way must belong
    to root or the owner and not be writable by others (unless sticky, like ``/tmp``); the
    last directory must be the owner's and writable by nobody else. Also the check of Dask
    staging directories (``hub_config/gateway/slurm.py``), run by the gateway for a cluster's
    owner.
    """
    if not os.path.isabs(directory):
        raise TokenDirError(f"{directory}: not an absolute path")
    names = [n for n in directory.split("/") if n]
    if any(n in (".", "..") for n in names):
        raise TokenDirError(f"{directory}: '.' or '..' in the path")
    me = os.geteuid() if owner is None else owner
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    where, links = "", 0
    try:
        while names:
            name = names.pop(0)
            where = os.path.normpath(where + "/" + name)
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(name, 0o700, dir_fd=fd)
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid not in (0, me):
                    raise TokenDirError(f"{where}: a symlink owned by another user")
                links += 1
                if links > 40:
                    raise TokenDirError(f"{directory}: too many symlinks")
                target = os.readlink(name, dir_fd=fd)
                where = os.path.dirname(where)
                if target.startswith("/"):  # walk the target from / too
                    os.close(fd)
                    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
                    where = ""
                names[:0] = [n for n in target.split("/") if n and n != "."]
                continue
            # directories on the way may be search-only for us (a 0711 home root): O_PATH needs
            # no read permission; the last directory is ours when we write in it
            last = not names
            mine = last and owner is None
            flags = (os.O_RDONLY if mine else _SEARCH_ONLY) | os.O_DIRECTORY | os.O_NOFOLLOW
            try:
                nfd = os.open(name, flags, dir_fd=fd)
            except NotADirectoryError:
                raise TokenDirError(f"{where}: not a directory") from None
            os.close(fd)
            fd = nfd
            st = os.fstat(fd)
            mode = stat.S_IMODE(st.st_mode)
            if st.st_uid not in (0, me):
                raise TokenDirError(f"{where}: belongs to another user (uid {st.st_uid})")
            if last:
                if st.st_uid != me:
                    raise TokenDirError(f"{where}: the directory must be the owner's own")
                if mode & 0o022:
                    raise TokenDirError(f"{where}: writable by others (mode {oct(mode)})")
            elif mode & 0o002 and not mode & stat.S_ISVTX:
                raise TokenDirError(f"{where}: writable by everyone (mode {oct(mode)})")
        return fd
    except BaseException:
        os.close(fd)
        raise


def private_dir_problem(directory: str, *, owner: int) -> str | None:
    """Why ``directory`` is not a private directory of account ``owner`` by the walk of
    :func:`_open_private_dir` (``None``: it is); FileNotFoundError if it does not exist.

    Where the checker (not root) may not look any further, a directory on the way that is the
    owner's and writable by nobody else is enough: below it only the owner (and root) can
    change anything."""
    try:
        os.close(_open_private_dir(directory, owner=owner, create=False))
        return None
    except TokenDirError as e:
        return str(e)
    except PermissionError:
        head = os.path.normpath(directory)
        while head != "/":
            head = os.path.dirname(head)
            try:
                os.close(_open_private_dir(head, owner=owner, create=False))
                return None
            except (PermissionError, FileNotFoundError):
                continue
        return f"{directory}: cannot be checked from here"


def read_token_file(path: str | None) -> str | None:
    """The token in ``path`` (whitespace stripped), or None when there is no path, no file or
    an empty one: the reading side of :func:`write_token_file`."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


def write_token_file(path: str, token: str) -> None:
    """Write ``token`` to ``path`` atomically: a new 0600 file (``O_EXCL|O_NOFOLLOW``) in the
    same directory, fsynced, then renamed over ``path`` (a symlink there is replaced, never
    followed). Readers see the old or the new token, never half."""
    directory, name = os.path.split(path)
    if not name:
        raise TokenDirError(f"{path}: names a directory")
    dfd = _open_private_dir(directory or "/")
    tmp = f".bt-{secrets.token_hex(8)}.tmp"
    fd = -1
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        os.fchmod(fd, 0o600)
        data = (token.strip() + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp, dir_fd=dfd)
        except FileNotFoundError:
            pass
        raise
    finally:
        os.close(dfd)
