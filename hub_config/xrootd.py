"""The embedded storage of ``afhub up``: an XRootD origin and an XCache in front of it.

Pure builders (keyword-only, no I/O) write the configuration files: :func:`origin_config`,
:func:`cache_config`, :func:`scitokens_config`, :func:`keycache_entry`. :func:`prepare` does
the I/O once per start (directories, host certificates from the facility CA, the demo
provider's public keys seeded into scitokens-cpp's key cache, the sample data) and returns the
two commands with their environments; ``runner.py`` starts and stops them.

How tokens reach the data (docs/operators-tokens.md "Reading data: the storage side"): clients
log in to either server with ``ztn`` over TLS, and the scitokens plugin authorizes every open
against the token's ``aud`` and ``storage.*`` scopes. XRootD 5.5 cannot give a caching proxy
its client's persona ("Client personas are not supported for caching proxy servers"), so the
cache checks the user's token itself, with the same issuer, audience and scopes as the origin,
before it reads anything, and reads misses from the origin under its own ``sss`` identity,
which the origin allows to read and nothing else. Neither server ever sees a token in a URL,
argument or log.

Both run as an unprivileged account (xrootd refuses root): ``xrootd`` when ``afhub up`` runs
as root, else the account ``afhub up`` runs as.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from afhub.server_ext import contract

from . import facility_ca
from .secrets import write_file

XROOTD = "/usr/bin/xrootd"
SSS_ADMIN = "/usr/bin/xrdsssadmin"
SERVICE_ACCOUNT = "xrootd"  # Debian's xrootd-server creates it
CACHE_IDENTITY = "afhub-cache"  # the cache's sss identity at the origin
EXPORTS = ("/public", "/user")
KEYCACHE_DAYS = 30
DEB_PACKAGES = ("xrootd-server", "xrootd-server-plugins", "xrootd-scitokens-plugins")


def scitokens_config(*, issuer: str, audience: str, onmissing: str = "deny") -> str:
    """scitokens plugin config: one issuer whose scopes are relative to ``/``."""
    return (
        "[Global]\n"
        f"audience = {audience}\n"
        f"onmissing = {onmissing}\n"
        "\n"
        "[Issuer afhub]\n"
        f"issuer = {issuer}\n"
        "base_path = /\n"
    )


def origin_config(
    *,
    port: int,
    export_dir: str,
    run_dir: str,
    cert: str,
    key: str,
    ca_dir: str,
    scitokens_cfg: str,
    keytab: str,
    authdb: str,
) -> str:
    """The origin: exports /public and /user from ``export_dir``; users log in with ``ztn``
    (token scopes decide), the cache with ``sss`` (``authdb`` lets it read)."""
    exports = "".join(f"all.export {e}\n" for e in EXPORTS)
    return (
        f"xrd.port {port}\n" + exports + f"oss.localroot {export_dir}\n"
        f"all.adminpath {run_dir}\n"
        f"all.pidpath {run_dir}\n"
        f"xrd.tls {cert} {key}\n"
        f"xrd.tlsca certdir {ca_dir}\n"
        "xrootd.seclib libXrdSec.so\n"
        "sec.protocol ztn\n"
        f"sec.protocol sss -s {keytab}\n"
        "sec.protbind * only ztn sss\n"
        "ofs.authorize 1\n"
        # tokens first; an entity without one (the cache's sss login) goes to the authdb
        f"ofs.authlib ++ libXrdAccSciTokens.so config={scitokens_cfg}\n"
        f"acc.authdb {authdb}\n"
    )


def origin_authdb() -> str:
    """The origin's rules for non-token identities: the cache may read the exports."""
    return "u " + CACHE_IDENTITY + "".join(f" {e} rl" for e in EXPORTS) + "\n"


def cache_config(
    *,
    port: int,
    origin: str,
    cache_dir: str,
    run_dir: str,
    cert: str,
    key: str,
    ca_dir: str,
    scitokens_cfg: str,
    ram: str = "1g",
) -> str:
    """The XCache: checks each user's token like the origin, caches what it reads from
    ``origin`` (``host:port``) in ``cache_dir``."""
    exports = "".join(f"all.export {e}\n" for e in EXPORTS)
    return (
        f"xrd.port {port}\n" + exports + "ofs.osslib libXrdPss.so\n"
        "pss.cachelib libXrdPfc.so\n"
        f"pss.origin {origin}\n"
        f"oss.localroot {cache_dir}\n"
        f"pfc.ram {ram}\n"
        f"all.adminpath {run_dir}\n"
        f"all.pidpath {run_dir}\n"
        f"xrd.tls {cert} {key}\n"
        f"xrd.tlsca certdir {ca_dir}\n"
        "xrootd.seclib libXrdSec.so\n"
        "sec.protocol ztn\n"
        "sec.protbind * only ztn\n"
        "ofs.authorize 1\n"
        f"ofs.authlib libXrdAccSciTokens.so config={scitokens_cfg}\n"
    )


def keycache_entry(jwks: dict, *, now: float, days: int = KEYCACHE_DAYS) -> str:
    """scitokens-cpp's key-cache value for an issuer: its JWKS, valid ``days`` from ``now``."""
    until = int(now) + days * 86400
    return json.dumps({"jwks": jwks, "next_update": until, "expires": until}, sort_keys=True)


def host_port(url: str) -> tuple[str, int]:
    """``(host, port)`` of a ``root://host:port`` URL."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 1094


def default_root(data_dir: str) -> str:
    """``data.embedded_root``'s default."""
    if os.geteuid() == 0:
        return "/var/lib/afhub/storage"
    return os.path.join(data_dir, "storage")


@dataclass
class Storage:
    """What :func:`prepare` made: the two servers' commands, environments and log files."""

    root: str
    ca_file: str
    ca_dir: str
    commands: dict[str, list[str]] = field(default_factory=dict)
    envs: dict[str, dict] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    uid: int = -1
    gid: int = -1

    @property
    def export_dir(self) -> str:
        return os.path.join(self.root, "export")


def service_account() -> tuple[int, int]:
    """``(uid, gid)`` the storage runs as: ``xrootd`` as root, else the current account."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    try:
        pw = pwd.getpwnam(SERVICE_ACCOUNT)
    except KeyError:
        raise RuntimeError(
            f"data.embedded: the {SERVICE_ACCOUNT!r} account does not exist; install "
            f"{' '.join(DEB_PACKAGES)} (`make system-deps`)"
        ) from None
    return pw.pw_uid, pw.pw_gid


#: the storage root's directories the service account owns; ``prepare`` makes them (as root, in
#: the root-owned storage root) and lays out everything below them as that account
SERVICE_DIRS = {"export": 0o700, "xdg-cache": 0o700, "etc": 0o700, "log": 0o755, "run": 0o700,
                "cache": 0o700}  # fmt: skip


def _service_dir(root_fd: int, name: str, mode: int, uid: int, gid: int) -> None:
    """``<root>/<name>``, a directory (never a link) of the service account with ``mode``."""
    try:
        os.mkdir(name, mode, dir_fd=root_fd)
    except FileExistsError:
        pass
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=root_fd)
    try:
        os.fchmod(fd, mode)
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def _as_account(uid: int, gid: int, work) -> None:
    """``work()`` as ``uid``/``gid``: in a child that dropped to them first when this process is
    root (ARCHITECTURE.md section 10: root never works by path in a directory another account
    can change), else here. A failure in the child is raised here."""
    if os.geteuid() != 0:
        work()
        return
    # the child says "done" on a pipe: its exit status may never reach us, because `afhub up`
    # reaps every child it does not track (runner.reap_orphans) and can take this one first
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(done_r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            work()
            os.write(done_w, b"done")
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(done_w)
    with os.fdopen(done_r, "rb") as done:
        said = done.read()  # until the child exits (its end closes)
    with contextlib.suppress(ChildProcessError):  # reaped already by the reaper thread
        os.waitpid(pid, 0)
    if said != b"done":
        raise RuntimeError(f"data.embedded: laying out the storage as uid {uid} failed (above)")


def _mkdir(path: str, mode: int) -> str:
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    return path


def _write(path: str, data: bytes, mode: int = 0o644) -> None:
    write_file(path, data, mode=mode)


def prepare(
    *,
    root: str,
    data_dir: str,
    issuer: str,
    audience: str,
    origin_port: int,
    cache_port: int,
    signing_key: str,
    public_files: dict[str, str],
    users: list[str],
    host: str = "127.0.0.1",
) -> Storage:
    """Lay out the embedded storage under ``root`` and return the commands that run it.

    ``public_files`` maps paths under /public to local files copied there (the sample data);
    ``users`` get an empty ``/user/<name>``. The CA (and its key) stay in ``data_dir``.

    As root, this process makes only the storage root and its CA directory (root's) and the
    service account's top directories (:data:`SERVICE_DIRS`, through a directory fd); what lies
    below them is written by a child running as that account, from inputs read here.
    """
    for binary in (XROOTD, SSS_ADMIN):
        if not os.access(binary, os.X_OK):
            raise RuntimeError(
                f"data.embedded: {binary} is not installed; install {' '.join(DEB_PACKAGES)} "
                "(`make system-deps`)"
            )
    uid, gid = service_account()
    ca_cert, ca_key = facility_ca.ensure_ca(data_dir)
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    ca_dir = _mkdir(os.path.join(root, "ca"), 0o755)
    ca_file = os.path.join(ca_dir, "facility-ca.pem")
    shutil.copyfile(ca_cert, ca_file)
    os.chmod(ca_file, 0o644)
    link = os.path.join(ca_dir, facility_ca.subject_hash(ca_file) + ".0")
    if not os.path.lexists(link):
        os.symlink("facility-ca.pem", link)
    storage = Storage(root=root, ca_file=ca_file, ca_dir=ca_dir, uid=uid, gid=gid)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for name, mode in SERVICE_DIRS.items():
            _service_dir(root_fd, name, mode, uid, gid)
    finally:
        os.close(root_fd)

    # everything the service account's files hold, read or made here (the inputs may be
    # readable by root only)
    public = {}
    for rel, src in public_files.items():
        with open(src, "rb") as f:
            public[rel.lstrip("/")] = f.read()
    jwks_entry = keycache_entry(facility_ca.public_jwks(signing_key), now=time.time())
    cert_pem, key_pem = facility_ca.host_certificate(
        ca_cert,
        ca_key,
        names=["localhost", host] if host != "localhost" else [host],
        ips=["127.0.0.1"] if host in ("localhost", "127.0.0.1") else [],
    )
    export = storage.export_dir
    xdg = os.path.join(root, "xdg-cache")
    etc = os.path.join(root, "etc")
    logs = os.path.join(root, "log")
    cert = os.path.join(etc, "hostcert.pem")
    key = os.path.join(etc, "hostkey.pem")
    keytab = os.path.join(etc, "cache.keytab")
    scitokens_cfg = os.path.join(etc, "scitokens.cfg")
    origin_scitokens = os.path.join(etc, "scitokens-origin.cfg")
    authdb = os.path.join(etc, "origin.authdb")

    def lay_out() -> None:  # as the service account
        for sub in ("public", "user"):
            _mkdir(os.path.join(export, sub), 0o755)
        for rel, data in public.items():
            dest = os.path.join(export, "public", rel)
            _mkdir(os.path.dirname(dest), 0o755)
            if not os.path.exists(dest) or os.path.getsize(dest) != len(data):
                _write(dest, data)
        for name in users:
            _mkdir(os.path.join(export, "user", name), 0o755)
        # scitokens-cpp's key cache, seeded with the demo provider's public keys (it fetches
        # keys only over https; the demo provider speaks http on loopback)
        _mkdir(os.path.join(xdg, "scitokens"), 0o700)
        db = os.path.join(xdg, "scitokens", "scitokens_cpp.sqllite")
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS keycache (issuer TEXT PRIMARY KEY, keys TEXT)")
            conn.execute("INSERT OR REPLACE INTO keycache VALUES (?, ?)", (issuer, jwks_entry))
        conn.close()
        os.chmod(db, 0o600)
        _write(cert, cert_pem)
        _write(key, key_pem, 0o600)
        if not os.path.exists(keytab):
            subprocess.run(
                [
                    SSS_ADMIN,
                    "-k",
                    "afhub",
                    "-u",
                    CACHE_IDENTITY,
                    "-g",
                    CACHE_IDENTITY,
                    "add",
                    keytab,
                ],  # fmt: skip
                check=True,
                capture_output=True,
            )
        os.chmod(keytab, 0o600)
        _write(scitokens_cfg, scitokens_config(issuer=issuer, audience=audience).encode())
        _write(
            origin_scitokens,
            scitokens_config(issuer=issuer, audience=audience, onmissing="passthrough").encode(),
        )
        _write(authdb, origin_authdb().encode())
        for name in ("origin", "cache"):
            _mkdir(os.path.join(root, "run", name), 0o700)
            _write(os.path.join(etc, f"{name}.cfg"), configs[name].encode())

    base_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": root,
        "XDG_CACHE_HOME": xdg,
        contract.CA_DIR: ca_dir,
        "LANG": "C.UTF-8",
    }
    configs: dict[str, str] = {}
    for name, port in (("origin", origin_port), ("cache", cache_port)):
        run_dir = os.path.join(root, "run", name)
        cfg = os.path.join(etc, f"{name}.cfg")
        if name == "origin":
            configs[name] = origin_config(
                port=port,
                export_dir=export,
                run_dir=run_dir,
                cert=cert,
                key=key,
                ca_dir=ca_dir,
                scitokens_cfg=origin_scitokens,
                keytab=keytab,
                authdb=authdb,
            )
            env = dict(base_env)
        else:
            configs[name] = cache_config(
                port=port,
                origin=f"{host}:{origin_port}",
                cache_dir=os.path.join(root, "cache"),
                run_dir=run_dir,
                cert=cert,
                key=key,
                ca_dir=ca_dir,
                scitokens_cfg=scitokens_cfg,
            )
            # the cache's own client: sss with the keytab to the origin, never a token
            env = dict(base_env, XrdSecSSSKT=keytab, XrdSecPROTOCOL="sss")
        log = os.path.join(logs, f"{name}.log")
        # xrootd -n NAME writes its log to <dir of -l>/NAME/<file of -l>
        storage.logs[name] = os.path.join(logs, f"afhub-{name}", f"{name}.log")
        storage.commands[name] = [XROOTD, "-c", cfg, "-l", log, "-n", f"afhub-{name}"]
        storage.envs[name] = env
    _as_account(uid, gid, lay_out)
    return storage
