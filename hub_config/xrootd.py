"""The embedded storage of ``afhub up``: an XRootD origin and an XCache in front of it.

Pure builders (keyword-only, no I/O) write the configuration files: :func:`origin_config`,
:func:`cache_config`, :func:`scitokens_config`, :func:`keycache_entry`. :func:`prepare` does
the I/O once per start (directories, host certificates from the facility CA, the demo
provider's public keys seeded into scitokens-cpp's key cache, the sample data) and returns the
two commands with their environments; ``runner.py`` starts and stops them.

How tokens reach the data (docs/tokens.md "Reading data"): clients log in to either server
with ``ztn`` over TLS, and the scitokens plugin authorizes every open against the token's
``aud`` and ``storage.*`` scopes. XRootD 5.5 cannot give a caching proxy its client's persona
("Client personas are not supported for caching proxy servers"), so the cache checks the
user's token itself, with the same issuer, audience and scopes as the origin, before it reads
anything, and reads misses from the origin under its own ``sss`` identity, which the origin
allows to read and nothing else. Neither server ever sees a token in a URL, argument or log.

Both run as an unprivileged account (xrootd refuses root): ``xrootd`` when ``afhub up`` runs
as root, else the account ``afhub up`` runs as.
"""

from __future__ import annotations

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


def _mkdir(path: str, mode: int, uid: int, gid: int) -> str:
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    return path


def _write(path: str, text: str, uid: int, gid: int, mode: int = 0o644) -> None:
    if mode & 0o077 == 0:
        facility_ca.write_private(
            path, text.encode(), uid=uid if os.geteuid() == 0 else None, gid=gid
        )
        return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


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
    ca_dir = _mkdir(os.path.join(root, "ca"), 0o755, 0, 0)
    ca_file = os.path.join(ca_dir, "facility-ca.pem")
    shutil.copyfile(ca_cert, ca_file)
    os.chmod(ca_file, 0o644)
    link = os.path.join(ca_dir, facility_ca.subject_hash(ca_file) + ".0")
    if not os.path.lexists(link):
        os.symlink("facility-ca.pem", link)
    storage = Storage(root=root, ca_file=ca_file, ca_dir=ca_dir, uid=uid, gid=gid)

    export = _mkdir(storage.export_dir, 0o700, uid, gid)
    for sub in ("public", "user"):
        _mkdir(os.path.join(export, sub), 0o755, uid, gid)
    for rel, src in public_files.items():
        dest = os.path.join(export, "public", rel.lstrip("/"))
        _mkdir(os.path.dirname(dest), 0o755, uid, gid)
        if not os.path.exists(dest) or os.path.getsize(dest) != os.path.getsize(src):
            shutil.copyfile(src, dest)
            os.chmod(dest, 0o644)
            if os.geteuid() == 0:
                os.chown(dest, uid, gid)
    for name in users:
        _mkdir(os.path.join(export, "user", name), 0o755, uid, gid)

    # scitokens-cpp's key cache, seeded with the demo provider's public keys (it fetches
    # keys only over https; the demo provider speaks http on loopback)
    xdg = _mkdir(os.path.join(root, "xdg-cache"), 0o700, uid, gid)
    _mkdir(os.path.join(xdg, "scitokens"), 0o700, uid, gid)
    db = os.path.join(xdg, "scitokens", "scitokens_cpp.sqllite")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS keycache (issuer TEXT PRIMARY KEY, keys TEXT)")
        entry = keycache_entry(facility_ca.public_jwks(signing_key), now=time.time())
        conn.execute("INSERT OR REPLACE INTO keycache VALUES (?, ?)", (issuer, entry))
    conn.close()
    if os.geteuid() == 0:
        os.chown(db, uid, gid)
    os.chmod(db, 0o600)

    etc = _mkdir(os.path.join(root, "etc"), 0o700, uid, gid)
    cert_pem, key_pem = facility_ca.host_certificate(
        ca_cert,
        ca_key,
        names=["localhost", host] if host != "localhost" else [host],
        ips=["127.0.0.1"] if host in ("localhost", "127.0.0.1") else [],
    )
    cert = os.path.join(etc, "hostcert.pem")
    key = os.path.join(etc, "hostkey.pem")
    _write(cert, cert_pem.decode(), uid, gid)
    _write(key, key_pem.decode(), uid, gid, 0o600)
    keytab = os.path.join(etc, "cache.keytab")
    if not os.path.exists(keytab):
        subprocess.run(
            [SSS_ADMIN, "-k", "afhub", "-u", CACHE_IDENTITY, "-g", CACHE_IDENTITY, "add", keytab],
            check=True,
            capture_output=True,
        )
    if os.geteuid() == 0:
        os.chown(keytab, uid, gid)
    os.chmod(keytab, 0o600)
    scitokens_cfg = os.path.join(etc, "scitokens.cfg")
    _write(scitokens_cfg, scitokens_config(issuer=issuer, audience=audience), uid, gid)
    origin_scitokens = os.path.join(etc, "scitokens-origin.cfg")
    _write(
        origin_scitokens,
        scitokens_config(issuer=issuer, audience=audience, onmissing="passthrough"),
        uid,
        gid,
    )
    authdb = os.path.join(etc, "origin.authdb")
    _write(authdb, origin_authdb(), uid, gid)
    logs = _mkdir(os.path.join(root, "log"), 0o755, uid, gid)
    base_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": root,
        "XDG_CACHE_HOME": xdg,
        contract.CA_DIR: ca_dir,
        "LANG": "C.UTF-8",
    }
    for name, port in (("origin", origin_port), ("cache", cache_port)):
        run_dir = _mkdir(os.path.join(root, "run", name), 0o700, uid, gid)
        cfg = os.path.join(etc, f"{name}.cfg")
        if name == "origin":
            text = origin_config(
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
            cache_dir = _mkdir(os.path.join(root, "cache"), 0o700, uid, gid)
            text = cache_config(
                port=port,
                origin=f"{host}:{origin_port}",
                cache_dir=cache_dir,
                run_dir=run_dir,
                cert=cert,
                key=key,
                ca_dir=ca_dir,
                scitokens_cfg=scitokens_cfg,
            )
            # the cache's own client: sss with the keytab to the origin, never a token
            env = dict(base_env, XrdSecSSSKT=keytab, XrdSecPROTOCOL="sss")
        _write(cfg, text, uid, gid)
        log = os.path.join(logs, f"{name}.log")
        # xrootd -n NAME writes its log to <dir of -l>/NAME/<file of -l>
        storage.logs[name] = os.path.join(logs, f"afhub-{name}", f"{name}.log")
        storage.commands[name] = [XROOTD, "-c", cfg, "-l", log, "-n", f"afhub-{name}"]
        storage.envs[name] = env
    return storage
