"""Helpers for the kernel discovery tests: real environments on disk and a real Jupyter server.

- `purelib_of`: the site-packages directory of another Python.
- `user_ids`, `as_user`: `subprocess.run` keywords running a child as a user's account (root);
  `remove_as_user`, `link_as_user`: `rm -rf` and `ln -sfn` run by that account.
- `make_user_venv`: a venv from the server environment's Python for a user's account (hub tests),
  built by that account.
- `make_venv`: `python -m venv --without-pip`; "with ipykernel" adds a .pth file pointing at this
  interpreter's site-packages, so ipykernel imports while `sys.prefix` is the new venv (no network).
- `make_conda_prefix`: a conda-style prefix Python treats as its own (`sys.prefix` == the prefix):
  `conda-meta/history`, a copy (or hard link) of the real interpreter in `bin/python`, a
  `lib/pythonX.Y` of symlinks to the real stdlib with its own site-packages, and optionally a
  shipped kernelspec and activation script.
- `JupyterServer`: `python -m jupyter_server` with a temporary HOME and config dirs, and a
  websocket `execute` like JupyterLab's.
Nothing here hard-codes paths of the machine; everything derives from `sys.executable`.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import site
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import requests

PYVER = f"python{sys.version_info[0]}.{sys.version_info[1]}"


def purelib_of(python) -> str:
    """The site-packages directory of another Python (a venv's, the server environment's)."""
    return subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def server_python() -> tuple[str, str]:
    """The afhub server environment's Python (executable by every account: user servers run
    as per-user system accounts when the hub is root) and its site-packages."""
    from afhub.spawner.local import server_environment

    python = os.path.join(server_environment(), "bin", "python")
    return python, purelib_of(python)


def user_ids(uid: int | None) -> dict:
    """``subprocess.run`` keywords running a child as account ``uid``: its primary group and its
    groups (none of root's), umask 022; ``{}`` (a child as this process) when ``uid`` is None or
    0 or this process is not root."""
    if uid is None or uid == 0 or os.geteuid() != 0:
        return {}
    pw = pwd.getpwuid(uid)
    return {
        "user": uid,
        "group": pw.pw_gid,
        "extra_groups": os.getgrouplist(pw.pw_name, pw.pw_gid),
        "umask": 0o022,
    }


def as_user(uid: int | None) -> dict:
    """:func:`user_ids`, with the account's HOME, PATH ``/usr/bin:/bin`` and cwd ``/``.

    Root acting on a path in a directory a user can write is where isolation breaks (a link
    planted there makes root write or chown elsewhere: ARCHITECTURE §10), so what tests build in
    a user's home they build as the user."""
    ids = user_ids(uid)
    if not ids:
        return {}
    env = {"HOME": pwd.getpwuid(ids["user"]).pw_dir, "PATH": "/usr/bin:/bin"}
    return {**ids, "env": env, "cwd": "/"}


def remove_as_user(path, uid: int | None) -> None:
    """``rm -rf path`` by account ``uid`` (as root: nothing root does reaches into its tree)."""
    subprocess.run(["rm", "-rf", "--", str(path)], check=True, **as_user(uid))


def link_as_user(target, link, uid: int | None) -> None:
    """``link`` -> ``target``, made (replacing a file or link there) by account ``uid``."""
    subprocess.run(["ln", "-sfn", "--", str(target), str(link)], check=True, **as_user(uid))


def check_uid(uid: int | None) -> None:
    """Building for another account needs root (the build then runs as it: :func:`as_user`)."""
    if uid is not None and os.geteuid() not in (0, uid):
        raise PermissionError(f"only root builds an environment for account {uid}")


# the .pth giving a venv the server environment's packages, written by the venv's own Python
_WRITE_PTH = """
import os, sys, sysconfig
with open(os.path.join(sysconfig.get_paths()["purelib"], sys.argv[1]), "w") as f:
    f.write(sys.argv[2] + "\\n")
"""


def make_user_venv(path: Path, *, uid: int, ipykernel: bool) -> Path:
    """A venv (no pip) from the server environment's Python, owned by ``uid``; with ipykernel
    through a .pth file pointing at the server environment's site-packages (no network).

    As root for another account every step (its missing parent directories too) runs as that
    account (:func:`as_user`): root writes nothing in the user's home."""
    check_uid(uid)
    python, site = server_python()
    run = {"check": True, **as_user(uid)}
    subprocess.run([python, "-m", "venv", "--without-pip", str(path)], **run)
    if ipykernel:
        pth = "_afhub_test_ipykernel.pth"
        subprocess.run([str(path / "bin" / "python"), "-c", _WRITE_PTH, pth, site], **run)
    return path


def this_site_packages() -> list[str]:
    return [p for p in site.getsitepackages() if os.path.isdir(os.path.join(p, "ipykernel"))]


def make_venv(
    path: Path, *, ipykernel: bool, system_site: bool = False, base: str | None = None
) -> Path:
    """A venv at ``path``; ``base``: another environment prefix (e.g. the server environment,
    which per-user accounts can execute) to build it from and take ipykernel from."""
    python = os.path.join(base, "bin", "python") if base else sys.executable
    args = [python, "-m", "venv", "--without-pip"]
    if system_site:
        args.append("--system-site-packages")
    subprocess.run([*args, str(path)], check=True)
    if ipykernel:
        sources = [str(next(Path(base).glob("lib/python3*/site-packages")))] if base else None
        add_ipykernel_pth(path / "lib" / PYVER / "site-packages", sources)
    return path


def add_ipykernel_pth(site_packages: Path, sources: list[str] | None = None) -> None:
    site_packages.mkdir(parents=True, exist_ok=True)
    text = "\n".join(sources or this_site_packages()) + "\n"
    (site_packages / "_afhub_test_ipykernel.pth").write_text(text)


def _base_python() -> str:
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def make_conda_prefix(
    path: Path,
    *,
    ipykernel: bool = True,
    kernels: dict[str, dict] | None = None,
    activate_script: str | None = None,
) -> Path:
    (path / "conda-meta").mkdir(parents=True)
    (path / "conda-meta" / "history").write_text("==> 2026-01-01 00:00:00 <==\n# cmd: test\n")
    (path / "bin").mkdir()
    try:
        os.link(_base_python(), path / "bin" / "python")
    except OSError:
        shutil.copy2(_base_python(), path / "bin" / "python")
    (path / "bin" / "python3").symlink_to("python")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    lib = path / "lib" / PYVER
    lib.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name != "site-packages":
            (lib / entry.name).symlink_to(entry)
    (lib / "site-packages").mkdir()
    if ipykernel:
        add_ipykernel_pth(lib / "site-packages")
    for name, spec in (kernels or {}).items():
        kdir = path / "share" / "jupyter" / "kernels" / name
        kdir.mkdir(parents=True)
        (kdir / "kernel.json").write_text(json.dumps(spec))
    if activate_script is not None:
        act = path / "etc" / "conda" / "activate.d"
        act.mkdir(parents=True)
        (act / "test.sh").write_text(activate_script)
    return path


def python_spec(argv0: str, display_name: str) -> dict:
    return {
        "argv": [argv0, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """A real `jupyter server` with HOME=home and the afhub extension enabled by config file."""

    def __init__(self, home: Path, *, config: dict | None = None, env: dict | None = None):
        self.home = home
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}/"
        conf_dir = home / ".jupyter"
        (conf_dir / "jupyter_server_config.d").mkdir(parents=True, exist_ok=True)
        shipped = Path(__file__).parent.parent / "server_ext" / "jupyter-config"
        shutil.copy(
            shipped / "jupyter_server_config.d" / "afhub.json",
            conf_dir / "jupyter_server_config.d" / "afhub.json",
        )
        (conf_dir / "jupyter_server_config.json").write_text(json.dumps(config or {}))
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JUPYTER", "AFHUB_", "CONDA", "MAMBA", "VIRTUAL_ENV"))
        }
        self.env.update(
            HOME=str(home),
            JUPYTER_CONFIG_DIR=str(conf_dir),
            JUPYTER_DATA_DIR=str(home / ".local" / "share" / "jupyter"),
            JUPYTER_RUNTIME_DIR=str(home / ".runtime"),
            JUPYTER_PLATFORM_DIRS="1",
        )
        self.env.update(env or {})
        self.log = home / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> JupyterServer:
        args = [
            sys.executable,
            "-m",
            "jupyter_server",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.open_browser=False",
            "--allow-root",
            f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={self.home}",
        ]
        self._logf = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, env=self.env, cwd=self.home, stdout=self._logf, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter server exited:\n{self.log.read_text()}")
            try:
                if requests.get(self.url + "api/status", headers=self.headers, timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"jupyter server did not start:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._logf.close()

    @property
    def headers(self) -> dict:
        return {"Authorization": f"token {self.token}"}

    def get(self, path: str, **kw):
        return requests.get(self.url + path, headers=self.headers, timeout=30, **kw)

    def post(self, path: str, body=None, **kw):
        return requests.post(self.url + path, headers=self.headers, json=body, timeout=30, **kw)

    def put(self, path: str, body=None, **kw):
        return requests.put(self.url + path, headers=self.headers, json=body, timeout=30, **kw)

    def delete(self, path: str):
        return requests.delete(self.url + path, headers=self.headers, timeout=30)

    async def execute(self, kernel_id: str, code: str, timeout: float = 60) -> str:
        """Run code through the kernel websocket (as JupyterLab does); return its stdout."""
        from kernel_ws import KernelError, execute

        url = f"ws://127.0.0.1:{self.port}/api/kernels/{kernel_id}/channels"
        try:
            return await execute(url, self.headers, code, timeout)
        except KernelError as e:
            raise AssertionError("\n".join(e.traceback) or str(e)) from None
