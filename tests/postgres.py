"""A real PostgreSQL server for tests (Debian's ``postgresql`` package; ``make test`` installs it).

``PostgresServer().start()`` runs ``initdb`` and ``pg_ctl`` in its own temporary directory on
a free loopback port (no systemd, no system cluster touched), with password authentication for
a ``hub`` role, and ``stop()`` removes it again. As root the server runs as the ``postgres``
account (PostgreSQL refuses root); otherwise as the caller.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from facility import free_port


def pg_bindir() -> str | None:
    """Newest ``/usr/lib/postgresql/<major>/bin`` with ``initdb``, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return os.path.dirname(found[-1]) if found else None


class PostgresServer:
    """One PostgreSQL cluster: ``url`` (no password in it), ``password``, ``env`` (PGPASSWORD)."""

    def __init__(self, *, db: str = "jupyterhub", role: str = "hub"):
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (make system-deps installs it)")
        # outside pytest's 0700 tmp dirs, which the postgres account cannot traverse
        self.root = Path(tempfile.mkdtemp(prefix="afhub-test-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.db, self.role = db, role
        self.password = secrets.token_urlsafe(18)
        self.account = "postgres" if os.geteuid() == 0 else None
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.role}@127.0.0.1:{self.port}/{self.db}"

    def _run(self, cmd: list[str], **kw) -> subprocess.CompletedProcess:
        if self.account:
            cmd = ["runuser", "-u", self.account, "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)

    def _psql(self, sql: str) -> None:
        # over the server's own socket directory as the superuser (trust for local sockets)
        user = self.account or pwd.getpwuid(os.getuid()).pw_name
        self._run(
            [f"{self.bindir}/psql", "-h", str(self.root), "-p", str(self.port), "-U", user,
             "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q"],
            input=sql,
        )  # fmt: skip

    def start(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.account:
            pw = pwd.getpwnam(self.account)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)
        user = self.account or pwd.getpwuid(os.getuid()).pw_name
        # local socket: trust (the setup above); TCP: passwords only (scram)
        self._run(
            [f"{self.bindir}/initdb", "-D", str(self.data), "-U", user,
             "--auth-local=trust", "--auth-host=scram-sha-256"]
        )  # fmt: skip
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            [f"{self.bindir}/pg_ctl", "-D", str(self.data), "-o", opts,
             "-l", str(self.root / "log"), "-w", "start"]
        )  # fmt: skip
        self.started = True
        self._psql(
            f"CREATE ROLE {self.role} LOGIN PASSWORD '{self.password}';\n"
            f"CREATE DATABASE {self.db} OWNER {self.role};\n"
        )
        return self

    def query(self, sql: str) -> list[tuple]:
        import psycopg2

        with (
            psycopg2.connect(
                host="127.0.0.1",
                port=self.port,
                user=self.role,
                password=self.password,
                dbname=self.db,
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute(sql)
            return cur.fetchall()

    def log_text(self) -> str:
        try:
            return (self.root / "log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.started:
            self._run([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"])
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)
