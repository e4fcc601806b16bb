"""A real afhub facility for tests: ``afhub up`` as a subprocess on free loopback ports.

Nothing here is faked: the hub, configurable-http-proxy, the demo OIDC provider and user
servers are the real processes ``afhub up`` starts. ``Facility.login`` goes through the
provider's login form exactly as a browser would (minus JavaScript, which it does not need).
"""

from __future__ import annotations

import copy
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

import requests
import yaml

REPO = Path(__file__).resolve().parent.parent

# Debian's Chromium, driven by Playwright (which cannot download its own browser here).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
EXAMPLES = REPO / "hub_config" / "examples"


def example_values(name: str = "local") -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def dask_values() -> dict:
    """The embedded default as the Dask tests run it: culling off (a test's quiet server must
    stay up) and the gateway looking for stopped servers every second."""
    values = example_values("local")
    values["culling"] = {"enabled": False}
    values["dask"]["server_check_interval"] = 1
    return values


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_values(values: dict) -> dict:
    """``values`` with every port set to 0 (``afhub up`` picks free ones) on 127.0.0.1.

    As root, the local backend creates one system account per hub user; so that facilities
    running at the same time on this machine (other test runs) never share accounts or homes,
    each gets its own account prefix and home root unless the values name them.
    """
    values = copy.deepcopy(values)
    backend = values.setdefault("backend", {})
    if backend.get("type", "local") == "local" and os.geteuid() == 0:
        local = backend.setdefault("local", {})
        local.setdefault("account_prefix", f"aft{secrets.token_hex(3)}-")
        if "home_root" not in local:
            root = tempfile.mkdtemp(prefix="afhub-test-homes-")
            os.chmod(root, 0o711)
            local["home_root"] = root
    hub = values.setdefault("hub", {})
    hub.update({"ip": "127.0.0.1", "hub_ip": "127.0.0.1", "hub_port": 0, "proxy_api_port": 0})
    if values.get("auth", {}).get("provider") == "dev":
        values["auth"].setdefault("dev", {})["port"] = 0
    if (values.get("dask") or {}).get("enabled"):
        values["dask"].update({"port": 0, "scheduler_port": 0})
    data = values.get("data") or {}
    if data.get("embedded") and "embedded_root" not in data:
        # its own storage (data, cache, CA copy) per facility, reachable by the storage's
        # account and users (pytest's tmp dirs are 0700)
        root = tempfile.mkdtemp(prefix="afhub-test-storage-")
        os.chmod(root, 0o755)
        data["embedded_root"] = root
    return values


class HubSession:
    """A logged-in user's browser-like session with the hub."""

    def __init__(self, facility: Facility, username: str, session: requests.Session):
        self.facility = facility
        self.username = username
        self.session = session

    def url(self, path: str) -> str:
        return urljoin(self.facility.url, path.lstrip("/"))

    def _xsrf(self) -> dict:
        token = self.session.cookies.get("_xsrf", path="/hub/") or self.session.cookies.get("_xsrf")
        return {"X-XSRFToken": token} if token else {}

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 30)
        return self.session.get(self.url(path), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 30)
        headers = {**self._xsrf(), **kw.pop("headers", {})}
        return self.session.post(self.url(path), headers=headers, **kw)

    def api(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 30)
        headers = {**self._xsrf(), **kw.pop("headers", {})}
        return self.session.request(
            method, self.url("hub/api/" + path.lstrip("/")), headers=headers, **kw
        )

    def server_api(self, method: str, path: str, server_name: str = "", **kw) -> requests.Response:
        """REST call to this user's running server (``/user/<name>/[<server>/]`` + path).

        The first call goes through the server's OAuth handshake with the hub, as a browser's
        would; calls carry the server's own ``_xsrf`` cookie as ``X-XSRFToken``.
        """
        model = self.server_model(server_name)
        assert model and model.get("ready"), (
            f"server {server_name!r} of {self.username} is not running"
        )
        base = self.url(model["url"])
        kw.setdefault("timeout", 30)
        if not any(c.name == "_xsrf" and c.path == model["url"] for c in self.session.cookies):
            self.session.get(base, timeout=30)  # OAuth with the hub; sets the _xsrf cookie
        token = next(
            (c.value for c in self.session.cookies if c.name == "_xsrf" and c.path == model["url"]),
            None,
        )
        headers = {**({"X-XSRFToken": token} if token else {}), **kw.pop("headers", {})}
        return self.session.request(method, base + path.lstrip("/"), headers=headers, **kw)

    def _server_path(self, server_name: str) -> str:
        return (
            f"users/{self.username}/servers/{server_name}"
            if server_name
            else f"users/{self.username}/server"
        )

    def spawn(self, user_options: dict | None = None, server_name: str = "") -> requests.Response:
        return self.api("POST", self._server_path(server_name), json=user_options or {})

    def server_model(self, server_name: str = "") -> dict | None:
        r = self.api("GET", f"users/{self.username}")
        r.raise_for_status()
        return r.json().get("servers", {}).get(server_name)

    def wait_ready(self, server_name: str = "", timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.server_model(server_name)
            if model and model.get("ready"):
                return self.url(model["url"])
            if model is None:
                raise AssertionError(f"server {server_name!r} of {self.username} is not starting")
            time.sleep(0.3)
        raise TimeoutError(f"server {server_name!r} of {self.username} not ready in {timeout}s")

    def stop_server(self, server_name: str = "", timeout: float = 60) -> None:
        r = self.api("DELETE", self._server_path(server_name))
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server_model(server_name) is None:
                return
            time.sleep(0.3)
        raise TimeoutError(f"server {server_name!r} of {self.username} did not stop")


# account prefixes of every facility made in this process: the session's leak check
# (tests/leaks.py) looks for accounts left under these
ACCOUNT_PREFIXES: set[str] = set()
DEFAULT_ACCOUNT_PREFIX = "afhub-"  # the local backend's account_prefix when the values name none


class Facility:
    """One ``afhub up`` process and what it started."""

    def __init__(self, values: dict, workdir: Path, *, loopback: bool = True):
        self.values = loopback_values(values) if loopback else copy.deepcopy(values)
        # the public port in the file too: `afhub up --port` must not change hub.port of a file
        # for more than one host (addresses.up_override_problems), so the flag repeats it
        self.port = free_port()
        self.values.setdefault("hub", {})["port"] = self.port
        if self.per_user_accounts():
            ACCOUNT_PREFIXES.add(self.local_settings.get("account_prefix", DEFAULT_ACCOUNT_PREFIX))
        # what existed before: a fixed prefix (afdask-, afdata-) may name accounts another run
        # made; this facility removes only those it created (remove_accounts)
        self._accounts_before = {pw.pw_name for pw in pwd.getpwall()}
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.values_path = self.workdir / "values.yaml"
        self.values_path.write_text(yaml.safe_dump(self.values))
        self.log_path = self.workdir / "afhub-up.log"
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen | None = None
        self._admin: HubSession | None = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self, timeout: float = 90, cmd: list[str] | None = None, cwd=None) -> Facility:
        """Run ``afhub up`` (or ``cmd``, which must end up running it) until it says it is up."""
        self._log = open(self.log_path, "ab")
        offset = self._log.tell()
        cmd = cmd or [
            sys.executable,
            "-m",
            "afhub.hub_config",
            "up",
            "-f",
            str(self.values_path),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd or self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "afhub is up at " in self.log_text()[offset:]:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"afhub up exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
                )
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"afhub up not ready in {timeout}s:\n{self.log_text()[-4000:]}")

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # as Ctrl-C/SIGTERM would reach it
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.remove_accounts()
        storage = (self.values.get("data") or {}).get("embedded_root", "")
        if os.path.basename(storage).startswith("afhub-test-storage-"):
            shutil.rmtree(storage, ignore_errors=True)
        return self.proc.returncode

    # -- per-user accounts (root) ------------------------------------------------------
    @property
    def local_settings(self) -> dict:
        return (self.values.get("backend") or {}).get("local") or {}

    def per_user_accounts(self) -> bool:
        mode = self.local_settings.get("accounts", "auto")
        return mode == "system" or (mode == "auto" and os.geteuid() == 0)

    def account(self, username: str) -> str | None:
        """The system account ``username``'s servers run as (``None``: the hub's own)."""
        if not self.per_user_accounts():
            return None
        from afhub.spawner.accounts import system_username

        return system_username(
            self.local_settings.get("account_prefix", DEFAULT_ACCOUNT_PREFIX), username
        )

    def uid(self, username: str) -> int:
        account = self.account(username)
        return pwd.getpwnam(account).pw_uid if account else os.getuid()

    def home(self, username: str) -> Path:
        root = self.local_settings.get("home_root") or (
            "/home/afhub" if self.per_user_accounts() else str(self.data_dir / "home")
        )
        return Path(root) / username

    def remove_accounts(self) -> None:
        """Delete the accounts this facility created and its test home root.

        A random ``aft...`` prefix (``loopback_values``) is this facility's alone: every account
        under it goes. Under a fixed prefix a test chose (``afdask-``, ``afdata-``) only the
        accounts that did not exist when this facility was made: in a clean CI run that is all
        of them, and the session's leak check (``tests/leaks.py``) finds none left."""
        # the spawner's default prefix when the values name none (the embedded default as
        # shipped: tests/test_up.py's README command)
        prefix = self.local_settings.get("account_prefix", DEFAULT_ACCOUNT_PREFIX)
        if prefix and self.per_user_accounts():
            for pw in pwd.getpwall():
                if pw.pw_name.startswith(prefix) and (
                    prefix.startswith("aft") or pw.pw_name not in self._accounts_before
                ):
                    subprocess.run(["userdel", "--remove", pw.pw_name], capture_output=True)
        root = self.local_settings.get("home_root", "")
        if os.path.basename(root).startswith("afhub-test-homes-"):
            shutil.rmtree(root, ignore_errors=True)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- what is running ---------------------------------------------------------------
    def pid_of(self, name: str) -> int:
        return int((self.data_dir / f"{name}.afhub-pid").read_text())

    def idp_pid(self) -> int:
        return self.pid_of("idp")

    def hub_pid(self) -> int:
        return self.pid_of("hub")

    @property
    def idp_url(self) -> str:
        text = self.log_text()
        marker = "starting demo OIDC provider on "
        line = next(line for line in text.splitlines() if marker in line)
        return line.split(marker, 1)[1].strip()

    # -- users -----------------------------------------------------------------------
    def login(self, username: str, *, expect_ok: bool = True) -> HubSession:
        """Log in through the real OIDC flow: hub -> provider form -> callback -> hub."""
        s = requests.Session()
        r = s.get(self.url + "hub/oauth_login", timeout=30)
        r.raise_for_status()
        assert "/oauth2/authorize" in r.url, f"not redirected to the provider: {r.url}"
        r = s.post(r.url, data={"sub": username}, timeout=60)
        if expect_ok:
            # lands on the hub (spawn page, home) or, with a running server, on that server
            landed = "/hub/" in r.url or "/user/" in r.url
            assert r.status_code == 200 and landed, (
                f"login of {username} failed: {r.status_code} {r.url}"
            )
        hs = HubSession(self, username, s)
        hs.last_response = r
        return hs

    def login_with_server(self, username: str) -> HubSession:
        """:meth:`login`, then start the default server and wait until it is ready."""
        hs = self.login(username)
        r = hs.spawn()
        assert r.status_code in (201, 202), r.text
        hs.wait_ready()
        return hs

    def admin_api(self, method: str, path: str, **kw) -> requests.Response:
        """Hub REST as the facility's admin demo user (in an ``admin_groups`` group)."""
        if self._admin is None:
            admins = [
                u["name"]
                for u in self.values["auth"]["dev"]["users"]
                if set(u.get("groups", [])) & set(self.values["auth"].get("admin_groups", []))
            ]
            self._admin = self.login(admins[0])
        return self._admin.api(method, path, **kw)


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError after
    ``timeout`` seconds, naming ``what`` and the last value seen."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not reached in {timeout}s (last: {last!r})")


def process_tree_pids(root_pid: int) -> set[int]:
    import psutil

    try:
        proc = psutil.Process(root_pid)
        return {proc.pid} | {c.pid for c in proc.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")
