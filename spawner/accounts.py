"""System accounts of the local backend: one per hub user when the hub runs as root.

Modelled on The Littlest JupyterHub: an account named ``<prefix><hub name>`` is created on the
user's first start (``useradd``, its own group, home ``<home_root>/<hub name>`` with mode 0700,
no login shell), kept or deleted with the hub user (``backend.local.delete_accounts``).

Pure functions first (names, modes, whether an account may reach a path); the few functions that
change the system (:func:`ensure_account`, :func:`delete_account`) come last and run only as root.
Nothing here runs as or for the user's code: that is the spawner's ``preexec``.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import stat
import subprocess
from dataclasses import dataclass

MAX_NAME = 32  # useradd's limit on Linux
NOLOGIN = "/usr/sbin/nologin"
_VALID = re.compile(r"[a-z_][a-z0-9_-]*")
_PREFIX = re.compile(r"[a-z_][a-z0-9_-]*")

# accounts.mode values (``backend.local.accounts``)
MODES = ("auto", "system", "single-user", "shared-uid")


class AccountError(RuntimeError):
    """An account cannot be created or used; the message is safe to show the user."""


# ---- pure -------------------------------------------------------------------------------


def valid_prefix(prefix: str) -> bool:
    return bool(_PREFIX.fullmatch(prefix)) and len(prefix) <= 16


def system_username(prefix: str, name: str) -> str:
    """The account of hub user ``name``: ``prefix + name`` when that is a valid Linux name of at
    most 32 characters; otherwise a cleaned, truncated name plus 6 hex digits of its SHA-256, so
    two hub names never share an account (``a.b`` and ``a-b`` differ)."""
    plain = prefix + name
    if _VALID.fullmatch(plain) and len(plain) <= MAX_NAME:
        return plain
    cleaned = re.sub(r"[^a-z0-9_-]", "-", name.lower())
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:6]
    keep = MAX_NAME - len(prefix) - len(digest) - 1
    return f"{prefix}{cleaned[:keep]}-{digest}"


def resolve_mode(mode: str, *, euid: int) -> str:
    """``auto`` -> ``system`` as root, ``single-user`` otherwise; others as given."""
    if mode == "auto":
        return "system" if euid == 0 else "single-user"
    return mode


def single_user_refusal(*, owner: str | None, user: str) -> str | None:
    """The message refusing ``user``'s start in single-user mode (``None``: allowed)."""
    if owner is None or owner == user:
        return None
    return (
        f"This hub runs user servers without per-user accounts (single-user mode) and serves "
        f"{owner} only: every server would run as the same system account, so you could read "
        f"each other's files and tokens. Ask the facility admins (they can run the hub as root, "
        f"which gives each user an account, or opt into the unsafe backend.local.accounts: "
        f"shared-uid)."
    )


@dataclass(frozen=True)
class Node:
    """One path component as ``os.stat`` saw it."""

    path: str
    mode: int
    uid: int
    gid: int


def blocked_at(nodes: list[Node], *, uid: int, gids: set[int], need: int) -> str | None:
    """The first of ``nodes`` (the directories from ``/`` down to a target, then the target)
    that account ``uid`` (groups ``gids``) cannot get through: every directory needs search
    (x) permission, the last node ``need`` (an ``os.R_OK | os.X_OK`` mask). ``None``: reachable."""
    for i, node in enumerate(nodes):
        want = need if i == len(nodes) - 1 else os.X_OK
        if uid == 0:
            continue
        if node.uid == uid:
            bits = (node.mode >> 6) & 7
        elif node.gid in gids:
            bits = (node.mode >> 3) & 7
        else:
            bits = node.mode & 7
        if bits & want != want:
            return node.path
    return None


# ---- I/O ------------------------------------------------------------------------------------


def path_nodes(path: str) -> list[Node]:
    """The components of ``path`` from ``/`` down, as stat sees them (symlinks followed)."""
    path = os.path.realpath(path)
    parts = ["/"]
    for piece in path.strip("/").split("/"):
        if piece:
            parts.append(os.path.join(parts[-1], piece))
    out = []
    for p in parts:
        st = os.stat(p)
        out.append(Node(p, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid))
    return out


def account_ids(name: str) -> tuple[int, int, set[int]]:
    pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid, set(os.getgrouplist(name, pw.pw_gid))


def unreachable(path: str, account: str, need: int) -> str | None:
    """Where ``account`` is stopped on its way to ``path`` (``None`` if it gets there)."""
    uid, _, gids = account_ids(account)
    try:
        nodes = path_nodes(path)
    except FileNotFoundError:
        return path
    return blocked_at(nodes, uid=uid, gids=gids, need=need)


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AccountError(f"{cmd[0]} failed ({out.returncode}): {out.stderr.strip()[:300]}")


def ensure_home_root(home_root: str) -> None:
    """``home_root``: created 0711 (others may enter, not list) or checked not open to writes."""
    if not os.path.isdir(home_root):
        os.makedirs(home_root, mode=0o711, exist_ok=True)
        os.chmod(home_root, 0o711)
    st = os.stat(home_root)
    if st.st_uid != 0 or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise AccountError(
            f"backend.local.home_root {home_root} must belong to root and not be writable by "
            f"others (mode {oct(stat.S_IMODE(st.st_mode))}, owner uid {st.st_uid})"
        )


def ensure_account(name: str, *, home: str, comment: str) -> pwd.struct_passwd:
    """The account ``name``, created with home ``home`` (0700) and no login shell if missing.

    An existing account keeps its home (``pw_dir``). A home directory left by an earlier run
    (owned by root) is handed to the account; one owned by another account is refused.
    """
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    existed = os.path.lexists(home)
    if existed:
        st = os.lstat(home)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
            raise AccountError(f"cannot create account {name}: {home} exists and is not ours")
    _run(
        [
            "useradd",
            "--home-dir",
            home,
            *([] if existed else ["--create-home"]),
            "--shell",
            NOLOGIN,
            "--user-group",
            "--comment",
            comment[:100],
            name,
        ]
    )
    pw = pwd.getpwnam(name)
    if existed:
        _adopt(home, pw.pw_uid, pw.pw_gid)
    os.chmod(home, 0o700)
    return pw


def _adopt(home: str, uid: int, gid: int) -> None:
    """Give a root-owned home tree from an earlier run to the new account (links not followed)."""
    os.lchown(home, uid, gid)
    for root, dirs, files in os.walk(home):
        for n in dirs + files:
            p = os.path.join(root, n)
            if os.lstat(p).st_uid == 0:
                os.lchown(p, uid, gid)


def delete_account(name: str) -> bool:
    """Remove the account and its home (``userdel --remove``); False if it did not exist."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    _run(["userdel", "--remove", name])
    try:
        grp.getgrnam(name)
    except KeyError:
        return True
    _run(["groupdel", name])
    return True
