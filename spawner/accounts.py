"""System accounts of the local backend: one per hub user when the hub runs as root.

Modelled on The Littlest JupyterHub: an account named ``<prefix><hub name>`` is created on the
user's first start (``useradd``, its own group, home ``<home_root>/<hub name>`` with mode 0700,
no login shell, comment ``afhub user <hub name>``: the record of whose it is), kept or deleted
with the hub user (``backend.local.delete_accounts``).

Names are injective (:func:`system_username`: a name that is not a valid account name becomes a
cleaned stem, ``.`` and a hash, and plain names never hold a ``.``), and no backend runs a user's
server or cluster as a system account (:func:`account_refusal`: root, uids below ``UID_MIN``
or from ``UID_MAX`` to 65535, the hub's own uid) or as an account recorded for another hub user.

Pure functions first (names, modes, whether an account may reach a path); the few functions that
change the system (:func:`ensure_account`, :func:`delete_account`) come last and run only as root.
Nothing here runs as or for the user's code: that is the spawner's ``preexec``.
"""

from __future__ import annotations

import base64
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
MARKER = "."  # in hashed names only: a plain name (``_VALID``) never holds it
HASH_LEN = 12  # base32 characters of SHA-256 (60 bits) ending a hashed name
RECORD = "afhub user "  # the account's comment (GECOS): RECORD + the hub name it belongs to
_RECORD_UNSAFE = re.compile(r"[\x00-\x1f\x7f:]")  # not allowed in a passwd comment
OWNER_FILE = ".afhub-single-user"  # in the home root: the one user single-user mode serves
LOGIN_DEFS = "/etc/login.defs"
UID_MIN_DEFAULT, UID_MAX_DEFAULT = 1000, 60000  # useradd's defaults when login.defs names none
NOBODY_UID = 65534  # the kernel's overflow uid: files of unmapped owners, NFS root squash
RESERVED_TOP = 65535  # above UID_MAX up to here: Debian's static system uids (slurm 64030), nobody

# accounts.mode values (``backend.local.accounts``)
MODES = ("auto", "system", "single-user", "shared-uid")


class AccountError(RuntimeError):
    """An account cannot be created or used; the message is safe to show the user."""


class AccountRefused(AccountError):
    """The user may not run as the account (:func:`account_refusal`): a refusal (HTTP 403) to
    show the user, not a failure for the admins."""


# ---- pure -------------------------------------------------------------------------------


def valid_prefix(prefix: str) -> bool:
    return bool(_PREFIX.fullmatch(prefix)) and len(prefix) <= 16


def system_username(prefix: str, name: str) -> str:
    """The account of hub user ``name``: ``prefix + name`` when that is a valid Linux name of at
    most 32 characters (``[a-z_][a-z0-9_-]*``); otherwise a cleaned, truncated stem, ``.`` and
    12 base32 characters of the name's SHA-256 (``john.doe`` -> ``afhub-john-doe.gd3jm4f3ujpi``).

    Injective: a plain name never holds a ``.`` (so no hub name is mapped onto another's hashed
    account), and two hashed names differ in their hash unless SHA-256 collides on 60 bits, which
    the account's owner record then refuses (:func:`account_refusal`). The result is always a
    valid account name (``[a-z_][a-z0-9_.-]*``, what useradd, sudo and Slurm take)."""
    plain = prefix + name
    if _VALID.fullmatch(plain) and len(plain) <= MAX_NAME:
        return plain
    raw = hashlib.sha256(name.encode("utf-8", "surrogatepass")).digest()
    digest = base64.b32encode(raw).decode("ascii").lower()[:HASH_LEN]
    keep = MAX_NAME - len(MARKER) - HASH_LEN
    stem = (prefix + re.sub(r"[^a-z0-9_-]", "-", name.lower()))[:keep]
    if not re.match(r"[a-z_]", stem):  # (empty prefix) a name must not start with a digit or -
        stem = ("_" + stem)[:keep]
    return stem + MARKER + digest


def legacy_username(prefix: str, name: str) -> str:
    """The name afhub releases before issue 19 gave a hub name that is not a valid account name
    (stem, ``-``, 6 hex digits): a plain name could produce it too. Only used to find an account
    an earlier release created, and only if its owner record names ``name``."""
    plain = prefix + name
    if _VALID.fullmatch(plain) and len(plain) <= MAX_NAME:
        return plain
    cleaned = re.sub(r"[^a-z0-9_-]", "-", name.lower())
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    keep = MAX_NAME - len(prefix) - len(digest) - 1
    return f"{prefix}{cleaned[:keep]}-{digest}"


def owner_comment(name: str) -> str:
    """The comment (GECOS) recording that an account belongs to hub user ``name``:
    ``afhub user <name>``, as every afhub release wrote it; a name a comment cannot hold (a
    ``:``, a control character, more than 89 characters) or that starts with ``=`` is recorded
    as ``afhub user =<sha256 hex>``, which no other name's record can equal."""
    if _RECORD_UNSAFE.search(name) or len(name) > 89 or name.startswith("="):
        return RECORD + "=" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return RECORD + name


def parse_uid_range(text: str) -> tuple[int, int]:
    """``(UID_MIN, UID_MAX)`` of a login.defs text (the last setting wins, as in shadow);
    defaults 1000 and 60000."""
    found = {"UID_MIN": UID_MIN_DEFAULT, "UID_MAX": UID_MAX_DEFAULT}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in found and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    return found["UID_MIN"], found["UID_MAX"]


def home_path(root: str, user: str) -> str:
    """Hub user ``user``'s home under ``root``: ``<root>/<user>`` when the name is one plain path
    component. A name with ``/`` or NUL, ``.``/``..``, or a leading ``.`` (which could name the
    root's own files, such as :data:`OWNER_FILE`) would put the home elsewhere: refused
    (:class:`AccountRefused`), never cleaned into another user's path."""
    if not user or "/" in user or "\0" in user or user.startswith("."):
        raise AccountRefused(
            f"The hub name {user!r} cannot be a home directory name on this facility (it contains "
            f"'/' or starts with '.'); ask the facility admins."
        )
    return os.path.join(root, user)


def account_refusal(
    *,
    user: str,
    account: str,
    uid: int,
    comment: str,
    uid_min: int,
    uid_max: int,
    hub_uid: int,
    records: bool,
) -> str | None:
    """Why hub user ``user`` may not run as system account ``account`` (uid ``uid``, passwd
    comment ``comment``), as a message for the user; ``None``: they may. Every backend asks.

    Refused: root, any uid below ``uid_min`` (the system's accounts: daemon, munge...), the
    hub's own uid ``hub_uid``, uids above ``uid_max`` up to 65535 (Debian's static system
    accounts such as slurm 64030, ``nobody``; directory uids above 65535 are users); an
    account whose comment records another hub user (``afhub user <other>``); and where afhub
    creates the accounts itself (``records``: the local backend), an account without this
    user's record, which afhub did not create (every afhub release wrote the record), so it is
    never adopted."""
    why = None
    if uid == 0:
        why = "root"
    elif uid == hub_uid:
        why = "the account the hub itself runs as"
    elif uid < uid_min:
        why = f"a system account (uid {uid}, below UID_MIN {uid_min})"
    elif uid == NOBODY_UID:
        why = "the system's 'nobody'"
    elif uid_max < uid <= RESERVED_TOP:
        why = f"a system account (uid {uid}, above UID_MAX {uid_max})"
    if why:
        return (
            f"Your hub name {user!r} maps to the system account {account!r}, which is {why}; "
            f"servers and Dask clusters never run as it. Ask the facility admins for another "
            f"hub name or an account_prefix."
        )
    if comment == owner_comment(user):
        return None
    if comment.startswith(RECORD) or records:
        whose = "another hub user" if comment.startswith(RECORD) else "no afhub user"
        return (
            f"The system account {account!r} that your hub name {user!r} maps to belongs to "
            f"{whose} (its comment is not {owner_comment(user)!r}), so afhub will not run "
            f"your server or clusters as it. Ask the facility admins."
        )
    return None


def resolve_mode(mode: str, *, euid: int) -> str:
    """``auto`` -> ``system`` as root, ``single-user`` otherwise; others as given."""
    if mode == "auto":
        return "system" if euid == 0 else "single-user"
    return mode


def single_user_owner(home_root: str) -> str | None:
    """The one hub user single-user mode serves (``<home_root>/.afhub-single-user``, written by
    the local spawner at the first start), ``None`` before anyone started a server."""
    try:
        with open(os.path.join(home_root, OWNER_FILE), encoding="utf-8") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


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


def uid_range(path: str = LOGIN_DEFS) -> tuple[int, int]:
    """The system's ``UID_MIN`` and ``UID_MAX`` (``/etc/login.defs``; 1000 and 60000 when it
    names none or is missing)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_uid_range(f.read())
    except OSError:
        return UID_MIN_DEFAULT, UID_MAX_DEFAULT


def check_account(user: str, pw: pwd.struct_passwd, *, records: bool) -> None:
    """Raise :class:`AccountRefused` if hub user ``user`` may not run as account ``pw``
    (:func:`account_refusal` with this system's uid range and this process's uid)."""
    uid_min, uid_max = uid_range()
    message = account_refusal(
        user=user,
        account=pw.pw_name,
        uid=pw.pw_uid,
        comment=pw.pw_gecos,
        uid_min=uid_min,
        uid_max=uid_max,
        hub_uid=os.geteuid(),
        records=records,
    )
    if message:
        raise AccountRefused(message)


def account_for(prefix: str, name: str, *, records: bool) -> str:
    """The account hub user ``name`` has: :func:`system_username`, except where afhub creates
    the accounts (``records``) and an earlier release made this user's account under the old
    hashed name (:func:`legacy_username`): while the new name does not exist and the old
    account's comment records ``name``, that account stays theirs (their home, their files)."""
    new = system_username(prefix, name)
    old = legacy_username(prefix, name)
    if not records or old == new:
        return new
    try:
        pwd.getpwnam(new)
        return new
    except KeyError:
        pass
    try:
        pw = pwd.getpwnam(old)
    except KeyError:
        return new
    return old if pw.pw_gecos == owner_comment(name) else new


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


def ensure_account(name: str, *, home: str, user: str) -> pwd.struct_passwd:
    """Hub user ``user``'s account ``name``, created if missing with home ``home`` (0700), no
    login shell and the owner record (:func:`owner_comment`) as its comment.

    An existing account is used only if :func:`account_refusal` allows it (this user's record,
    not a system account), else :class:`AccountRefused`; it keeps its home (``pw_dir``). A home
    directory left by an earlier run (owned by root) is handed to the account; one owned by
    another account is refused.
    """
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        pass
    else:
        check_account(user, pw, records=True)
        return pw
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
            owner_comment(user),
            name,
        ]
    )
    pw = pwd.getpwnam(name)
    check_account(user, pw, records=True)  # (useradd picks uids from UID_MIN up)
    if existed:
        _adopt(home, pw.pw_uid, pw.pw_gid)
    os.chmod(home, 0o700)
    return pw


def _adopt(home: str, uid: int, gid: int) -> None:
    """Give a root-owned home tree from an earlier run to the new account: bottom up, through
    directory descriptors (``os.fwalk``, links neither followed nor re-owned by name), the top
    last, so the account cannot reach the tree while root still walks it."""
    top = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.fstat(top).st_uid != 0:
            raise AccountError(f"{home} is not root's: not handed to the new account")
        for _, dirs, files, dir_fd in os.fwalk(".", topdown=False, dir_fd=top):
            for n in dirs + files:
                if os.stat(n, dir_fd=dir_fd, follow_symlinks=False).st_uid == 0:
                    os.chown(n, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        os.fchown(top, uid, gid)
    finally:
        os.close(top)


def delete_account(name: str, *, user: str) -> bool:
    """Remove hub user ``user``'s account and its home (``userdel --remove``); False if it did
    not exist. An account that is not theirs (:func:`check_account`) is refused, never deleted."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return False
    check_account(user, pw, records=True)
    _run(["userdel", "--remove", name])
    try:
        grp.getgrnam(name)
    except KeyError:
        return True
    _run(["groupdel", name])
    return True
