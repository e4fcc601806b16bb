"""``afhub up``: run a whole facility on this machine and stop all of it again.

Starts, in order: the embedded storage (when ``data.embedded``: an XRootD origin and cache,
``xrootd.py``), the embedded OIDC provider (when ``auth.provider`` is ``dev``), then
JupyterHub (which starts configurable-http-proxy, services and user servers). It becomes a
child subreaper, so anything those start is re-parented here if its parent dies, and on
Ctrl-C/SIGTERM everything it started is stopped: hub first (it stops user servers and the
proxy cleanly), then any remaining descendant, then the provider.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import resources

import psutil
from afhub.hub_config.data import token_request
from afhub.hub_config.demo import dev_host, dev_settings, idp_command

from . import apply, facility_ca, xrootd
from . import values as values_mod

PR_SET_CHILD_SUBREAPER = 36
# a crashed hub or provider is restarted, at most MAX_RESTARTS times in RESTART_WINDOW seconds
MAX_RESTARTS = 3
RESTART_WINDOW = 300.0


def default_values_path() -> str:
    return str(resources.files("afhub.hub_config").joinpath("examples", "local.yaml"))


class FreePorts:
    """Distinct free ports for one facility's internal listeners.

    Each picked port stays bound until ``close()``: a port picked and released at once can be
    handed out again by the very next pick (the kernel owes nothing to a closed socket), and two
    of the facility's servers would then race for one port. Ports in ``taken`` (fixed by the
    values) are never returned.
    """

    def __init__(self, taken=()):
        self.taken = {int(p) for p in taken if p}
        self._held: list[socket.socket] = []

    def pick(self, host: str = "127.0.0.1") -> int:
        for _ in range(64):
            s = socket.socket()
            try:
                s.bind((host, 0))
            except OSError:
                s.close()
                raise
            self._held.append(s)  # held, so no later pick is given it
            port = s.getsockname()[1]
            if port not in self.taken:
                self.taken.add(port)
                return port
        raise OSError(f"no free port on {host} outside {sorted(self.taken)}")

    def close(self) -> None:
        for s in self._held:
            s.close()
        self._held.clear()

    def __enter__(self) -> FreePorts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def find_proxy() -> str:
    """configurable-http-proxy: on PATH, else in the checkout's ``node_modules`` (where
    ``make up`` installs it), else the bare name."""
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (os.path.dirname(here), os.getcwd()):
        candidate = os.path.join(root, "node_modules", ".bin", "configurable-http-proxy")
        if os.path.exists(candidate):
            return candidate
    return "configurable-http-proxy"


PROXY_GUARD = str(resources.files("afhub.hub_config") / "proxy_guard.mjs")


def guarded_proxy_command(chp: str) -> list[str]:
    """The command ``afhub up`` gives JupyterHub for the proxy: ``chp`` run through
    ``proxy_guard.mjs`` (a 400 instead of configurable-http-proxy's 500 for a URL path with
    malformed percent-encoding) when node is on PATH and ``chp`` is configurable-http-proxy's
    own script (``bin/`` beside ``lib/configproxy.js``); else ``chp`` alone."""
    node = shutil.which("node")
    path = shutil.which(chp) or chp
    real = os.path.realpath(path)
    lib = os.path.join(os.path.dirname(os.path.dirname(real)), "lib", "configproxy.js")
    if node and os.path.isfile(real) and os.path.isfile(lib):
        return [node, PROXY_GUARD, path]
    return [chp]


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def busy_ports(merged: dict) -> list[str]:
    """``key.path: ...`` for every port the facility needs that something else holds."""
    hub = merged["hub"]
    wanted = [
        ("hub.port", hub["ip"], hub["port"]),
        ("hub.hub_port", hub["hub_ip"], hub["hub_port"]),
        ("hub.proxy_api_port", "127.0.0.1", hub["proxy_api_port"]),
    ]
    if _dev_provider(merged):
        wanted.append(("auth.dev.port", dev_host(merged), dev_settings(merged)["port"]))
    if merged["dask"]["enabled"]:
        wanted.append(("dask.port", "127.0.0.1", merged["dask"]["port"]))
        wanted.append(("dask.scheduler_port", "127.0.0.1", merged["dask"]["scheduler_port"]))
    return [
        f"{key}: {host}:{port} is already in use (stop what holds it or choose another port)"
        for key, host, port in wanted
        if not port_free(host, port)
    ]


def internal_ports(merged: dict) -> str:
    """``internal ports: hub API 127.0.0.1:40321, proxy API 127.0.0.1:40322, ...``"""
    hub = merged["hub"]
    parts = [
        f"hub API {hub['hub_ip']}:{hub['hub_port']}",
        f"proxy API 127.0.0.1:{hub['proxy_api_port']}",
    ]
    if _dev_provider(merged):
        parts.append(f"demo OIDC provider {dev_host(merged)}:{dev_settings(merged)['port']}")
    if merged["dask"]["enabled"]:
        parts.append(f"dask-gateway 127.0.0.1:{merged['dask']['port']}")
        parts.append(f"dask schedulers 127.0.0.1:{merged['dask']['scheduler_port']}")
    return "internal ports: " + ", ".join(parts)


def orphaned_services(own: set[int]) -> list[tuple[str, psutil.Process]]:
    """JupyterHub services (idle culler, dask-gateway...) whose hub died: they were re-parented
    to us (subreaper) and carry ``JUPYTERHUB_SERVICE_NAME``, which user servers do not."""
    found = []
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return found
    for child in children:
        if child.pid in own:
            continue
        try:
            name = child.environ().get("JUPYTERHUB_SERVICE_NAME")
            if name and child.status() != psutil.STATUS_ZOMBIE:
                found.append((name, child))
        except psutil.Error:
            pass
    return found


def same_session_descendants(proc: psutil.Process) -> list[psutil.Process]:
    """``proc``'s descendants in its own session: its helpers, not what it runs for users.

    The gateway starts each Dask cluster's scheduler and workers in a session of their own;
    they outlive a dead gateway (and hub), and the next gateway adopts them from its database.
    Stopping them with the dead gateway lost every user's cluster on a hub crash."""
    sid = os.getsid(proc.pid)
    out = []
    for child in proc.children(recursive=True):
        try:
            if os.getsid(child.pid) == sid:
                out.append(child)
        except OSError:
            pass
    return out


def terminate(procs: list[psutil.Process], timeout: float = 10) -> None:
    """SIGTERM ``procs``, wait up to ``timeout`` s, SIGKILL what is left (and wait for it)."""
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=5)


def _dev_provider(values: dict) -> bool:
    return (values.get("auth") or {}).get("provider") == "dev"


DEMO_MISSING = (
    "auth.provider: 'dev' runs the demo identity provider, which this installation does not "
    "have: install afhub's demo extra (`pip install 'afhub[demo]'`; `make up` in a checkout "
    "installs it), or set auth.provider to your facility's provider (docs/operators.md)"
)


def demo_provider_installed() -> bool:
    """Whether the demo provider (the ``demo`` extra: oidc-provider-mock) can run here."""
    return importlib.util.find_spec("oidc_provider_mock") is not None


def _embedded_storage(values: dict) -> bool:
    return bool((values.get("data") or {}).get("embedded"))


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll until ``host:port`` accepts a connection, ``proc`` exits, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.1)
    return False


SAMPLE_FILES = ("uproot-HZZ.root", "nanoAOD_2015_CMS_Open_Data_ttbar.root")


def sample_files(values: dict) -> dict[str, str]:
    """The sample data the embedded origin serves: ``{path under /public: local file}``
    (from ``images/analysis/data`` of a checkout, else scikit-hep-testdata's cache)."""
    sample = values["data"]["sample_path"]
    rel = sample[len("/public") :].strip("/") if sample.startswith("/public") else "samples"
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = {}
    for name in SAMPLE_FILES:
        for candidate in (os.path.join(here, "images", "analysis", "data", name),):
            if os.path.exists(candidate):
                out[f"{rel}/{name}".lstrip("/")] = candidate
    return out


def reap_orphans(own: set[int]) -> None:
    """Reap exited orphans re-parented to us (a dead hub's proxy, say), but not ``own``
    children, whose Popen objects collect their own status. An unreaped zombie still
    "exists" for ``kill(pid, 0)``, which makes a restarted hub think its old proxy lives."""
    try:
        children = psutil.Process().children()
    except psutil.Error:
        return
    for child in children:
        if child.pid in own:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


def become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: stop() still finds the descendants whose parents are alive


def demo_users_hint(values: dict) -> str:
    """``alice (physicists, gpu-users), bob (physicists)`` for the demo provider's users."""
    users = values.get("auth", {}).get("dev", {}).get("users", [])
    if values.get("auth", {}).get("provider") != "dev":
        return ""
    return ", ".join(
        f"{u['name']} ({', '.join(u.get('groups', [])) or 'no groups'})" for u in users
    )


HUB_CONFIG_TEMPLATE = """\
# Generated by `afhub up`; edits are overwritten at the next start.
from afhub.hub_config import configure

configure(
    c,
    {values_path!r},
    data_dir={data_dir!r},
    overrides={overrides!r},
    deployment="standalone",
    exit_on_error=True,
)
"""


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Poll ``url`` until it answers 200, ``proc`` exits, or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


@dataclass
class Facility:
    """The processes of one running facility."""

    values_path: str
    data_dir: str
    ip: str = "127.0.0.1"
    port: int | None = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    commands: dict[str, tuple[list[str], dict]] = field(default_factory=dict)
    health_urls: dict[str, str] = field(default_factory=dict)
    health_ports: dict[str, tuple[str, int]] = field(default_factory=dict)
    restarts: list[float] = field(default_factory=list)
    merged: dict = field(default_factory=dict)  # the values in effect, once started

    def log(self, msg: str) -> None:
        print(f"[afhub] {msg}", file=sys.stderr, flush=True)

    def prepare(self) -> tuple[dict, dict]:
        values = values_mod.load_file(self.values_path)
        overrides: dict = {"hub": {}}
        if self.ip:
            overrides["hub"]["ip"] = self.ip
        if self.port is not None:
            overrides["hub"]["port"] = self.port
        if not values.get("hub", {}).get("proxy_command"):
            overrides["hub"]["proxy_command"] = guarded_proxy_command(find_proxy())
        # validated before anything starts; schema defaults filled
        merged = values_mod.load(apply.merge_values(values, overrides))
        # internal ports: free ones unless the values file fixes them (0 also means "pick"),
        # all distinct from each other and from the ones the values fix
        fixed = values.get("hub") or {}
        fixed_dask = values.get("dask") or {}
        dev_port = ((values.get("auth") or {}).get("dev") or {}).get("port")
        taken = [merged["hub"].get("port"), fixed.get("hub_port"), fixed.get("proxy_api_port")]
        taken += [dev_port, fixed_dask.get("port"), fixed_dask.get("scheduler_port")]
        with FreePorts(taken) as ports:
            hosts = {"hub_port": merged["hub"]["hub_ip"], "proxy_api_port": "127.0.0.1"}
            for key, host in hosts.items():
                if not fixed.get(key):
                    overrides["hub"][key] = ports.pick(host)
            if _dev_provider(merged):
                port = dev_port or ports.pick(dev_host(merged))
                overrides.setdefault("auth", {}).setdefault("dev", {})["port"] = port
            if _embedded_storage(merged):
                data = overrides.setdefault("data", {})
                root = merged["data"].get("embedded_root") or xrootd.default_root(self.data_dir)
                data["embedded_root"] = root
                data["origin"] = f"root://127.0.0.1:{ports.pick()}"
                data["cache"] = f"root://127.0.0.1:{ports.pick()}"
                data["ca_file"] = os.path.join(root, "ca", "facility-ca.pem")
                data["ca_dir"] = os.path.join(root, "ca")
            if merged["dask"]["enabled"]:
                for key in ("port", "scheduler_port"):
                    if not fixed_dask.get(key):
                        overrides.setdefault("dask", {})[key] = ports.pick()
        return values_mod.load(apply.merge_values(values, overrides)), overrides

    def _spawn(self, name: str, cmd: list[str], **kw) -> subprocess.Popen:
        self.commands[name] = (cmd, kw)
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.procs[name] = proc
        with open(os.path.join(self.data_dir, f"{name}.afhub-pid"), "w") as f:
            f.write(str(proc.pid))
        return proc

    def start(self) -> str:
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        merged, overrides = self.prepare()
        self.merged = merged
        busy = busy_ports(merged)
        if busy:
            raise RuntimeError("; ".join(busy))
        proxy = merged["hub"]["proxy_command"][0]
        if not shutil.which(proxy):
            raise RuntimeError(
                f"hub.proxy_command: {proxy!r} was not found or is not executable. Install "
                "configurable-http-proxy (`npm install -g configurable-http-proxy`; `make up` in "
                "a checkout installs it into node_modules) or set hub.proxy_command to its path"
            )
        if _dev_provider(merged) and not demo_provider_installed():
            raise RuntimeError(DEMO_MISSING)
        self.log(internal_ports(merged))
        signing_key = None
        if _dev_provider(merged):
            signing_key = facility_ca.ensure_signing_key(self.data_dir)
        if _embedded_storage(merged):
            self.start_storage(merged, signing_key)
        if _dev_provider(merged):
            port = merged["auth"]["dev"]["port"]
            host = dev_host(merged)
            self.log(f"starting demo OIDC provider on http://{host}:{port}/")
            wlcg = token_request(merged) if merged.get("data") else None
            idp = self._spawn(
                "idp", idp_command(merged, host, port, signing_key=signing_key, wlcg=wlcg)
            )
            self.health_urls["idp"] = f"http://{host}:{port}/.well-known/openid-configuration"
            if not wait_http(self.health_urls["idp"], 30, idp):
                raise RuntimeError(f"the demo OIDC provider did not start on port {port}")
        config_path = os.path.join(self.data_dir, "jupyterhub_config.py")
        with open(config_path, "w", encoding="utf-8") as f:
            f.write(
                HUB_CONFIG_TEMPLATE.format(
                    values_path=os.path.abspath(self.values_path),
                    data_dir=os.path.abspath(self.data_dir),
                    overrides=overrides,
                )
            )
        env = dict(os.environ)
        env["AFHUB_DATA_DIR"] = os.path.abspath(self.data_dir)
        self.log("starting JupyterHub")
        hub = self._spawn(
            "hub",
            [sys.executable, "-m", "jupyterhub", "-f", config_path],
            cwd=self.data_dir,
            env=env,
        )
        url = apply.public_url(merged)
        self.health_urls["hub"] = url + "hub/health"
        if not wait_http(url + "hub/health", 90, hub):
            raise RuntimeError("JupyterHub did not become healthy (see its log above)")
        return url

    def start_storage(self, merged: dict, signing_key: str) -> None:
        """The embedded XRootD origin and cache (``data.embedded``), as the storage account."""
        from afhub.hub_config.demo import dev_issuer, dev_settings

        data = merged["data"]
        storage = xrootd.prepare(
            root=data["embedded_root"],
            data_dir=self.data_dir,
            issuer=dev_issuer(merged),
            audience=data["audience"],
            origin_port=xrootd.host_port(data["origin"])[1],
            cache_port=xrootd.host_port(data["cache"])[1],
            signing_key=signing_key,
            public_files=sample_files(merged),
            users=[u["name"] for u in dev_settings(merged).get("users", [])],
        )
        for name in ("origin", "cache"):
            host, port = xrootd.host_port(data[name])
            self.log(f"starting XRootD {name} on root://{host}:{port} (log {storage.logs[name]})")
            # as root: drop to the storage account (xrootd refuses root)
            account = (
                {"user": storage.uid, "group": storage.gid, "extra_groups": []}
                if os.geteuid() == 0
                else {}
            )
            proc = self._spawn(
                name,
                storage.commands[name],
                env=storage.envs[name],
                cwd=storage.root,
                stdout=subprocess.DEVNULL,
                **account,
            )
            self.health_ports[name] = (host, port)
            if not wait_port(host, port, 30, proc):
                raise RuntimeError(f"the XRootD {name} did not start (see {storage.logs[name]})")

    def start_reaper(self) -> None:
        def loop():
            while True:
                reap_orphans({p.pid for p in list(self.procs.values())})
                time.sleep(0.2)

        threading.Thread(target=loop, name="afhub-reaper", daemon=True).start()

    def dead(self) -> list[str]:
        return [name for name, p in self.procs.items() if p.poll() is not None]

    def restart(self, name: str, *, now: float | None = None) -> bool:
        """Start ``name`` again after it died; False when it died too often to keep trying.

        User servers outlive a hub crash (they run in their own sessions) and the restarted
        hub reconnects them from its database, as after any hub restart.
        """
        now = time.monotonic() if now is None else now
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW]
        if len(self.restarts) >= MAX_RESTARTS:
            return False
        self.restarts.append(now)
        code = self.procs[name].returncode
        self.log(
            f"{name} exited with code {code}; restarting it ({len(self.restarts)}/{MAX_RESTARTS})"
        )
        if name == "hub":
            self.stop_orphaned_services()
        cmd, kw = self.commands[name]
        proc = self._spawn(name, cmd, **kw)
        if name in self.health_ports:
            if not wait_port(*self.health_ports[name], 30, proc):
                return False
        elif not wait_http(self.health_urls[name], 90, proc):
            return False
        self.log(f"{name} is back")
        return True

    def stop_orphaned_services(self) -> None:
        """Before a new hub starts, stop the services the dead one started (it would start
        its own: a second idle culler, a second gateway on a taken port). User servers stay:
        the new hub reconnects them."""
        services = orphaned_services({p.pid for p in self.procs.values()})
        if not services:
            return
        named = ", ".join(f"{name} (pid {p.pid})" for name, p in services)
        self.log(f"stopping the services the old hub started: {named}")
        procs = []
        for _, p in services:
            procs.append(p)
            try:
                procs += same_session_descendants(p)
            except psutil.Error:
                pass
        terminate(procs)

    def stop(self, timeout: float = 30) -> None:
        # Descendants now; whatever outlives its parent later is re-parented to us (subreaper).
        try:
            before = psutil.Process().children(recursive=True)
        except psutil.Error:
            before = []
        hub = self.procs.get("hub")
        if hub is not None and hub.poll() is None:
            self.log("stopping JupyterHub and user servers")
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(timeout)
            except subprocess.TimeoutExpired:
                self.log("JupyterHub did not stop in time; killing it")
                hub.kill()
                hub.wait()
        # anything left: servers, proxy, services, the provider
        leftovers = {}
        try:
            after = psutil.Process().children(recursive=True)
        except psutil.Error:
            after = []
        for p in before + after:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    leftovers[p.pid] = p
            except psutil.Error:
                pass
        terminate(list(leftovers.values()))
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for name in self.procs:
            try:
                os.unlink(os.path.join(self.data_dir, f"{name}.afhub-pid"))
            except OSError:
                pass
        self.log("stopped")


def run_up(values_path: str | None, ip: str | None, port: int | None, data_dir: str) -> int:
    become_subreaper()
    fac = Facility(
        values_path=values_path or default_values_path(), data_dir=data_dir, ip=ip, port=port
    )
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    code = 0
    fac.start_reaper()
    try:
        url = fac.start()
        print(f"afhub is up at {url}", flush=True)
        users = demo_users_hint(fac.merged)
        if users:
            fac.log(f"demo users (type the name at the provider's page): {users}")
        while not stopping:
            dead = fac.dead()
            if dead and not stopping and not all(fac.restart(name) for name in dead):
                fac.log(f"{', '.join(dead)} keeps failing; stopping the facility")
                code = 1
                break
            time.sleep(0.5)
    except values_mod.ValuesError as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        code = 2
    except RuntimeError as e:
        fac.log(f"error: {e}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        fac.stop()
    return code


__all__ = ["Facility", "FreePorts", "run_up"]
