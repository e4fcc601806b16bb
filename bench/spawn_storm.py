"""Benchmark: a spawn storm, afhub's embedded default against a plain JupyterHub, same run.

    python bench/spawn_storm.py [--users 20] [--spawn-limit 10] [--floor-rounds 3] [--smoke]

``--users`` users log in through the OIDC provider and start their default server at once
(one thread each); each user's time runs from the first request of the login to JupyterLab's
page answering 200 through the proxy (login -> JupyterLab ready). Two hubs, one after the other:

- afhub: the embedded default (``afhub up``: hub, proxy, demo provider, Dask gateway, XRootD
  storage), its local backend (per-user system accounts made on first start when root);
- plain: JupyterHub with ``GenericOAuthenticator`` against the same provider and the stock
  ``LocalProcessSpawner`` starting the same environment's ``jupyterhub-singleuser`` (without
  afhub's server extension); as root each user's server runs as a system account the bench
  makes beforehand (a plain hub needs existing accounts; afhub makes its own while starting).

Both hubs get ``concurrent_spawn_limit = --spawn-limit``: starts beyond it are answered 429,
and the user retries after a second (counted; they must then succeed). Printed per hub:
successes, p50/p95 login->ready, 429s, the hub process's CPU seconds (and per user), its peak
RSS, and the median of the users' servers' peak RSS; then the ratio afhub/plain (goal: p50 <=
1.05x, 0 failures) and the floor: the time a bare ``jupyterhub-singleuser`` of the same
environment, started by hand, takes to answer (median of ``--floor-rounds``), with each hub's
p50 as a multiple of it. Not a test.

``--smoke`` (``tests/test_bench_smoke.py``): 2 users, spawn limit 1 (one 429 path), 1 floor
round; its figures mean nothing. Figures: docs/reliability.md "Spawn storm".
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import requests
from common import local_accounts, shared_tempdir, smoke_arg, use_checkout

use_checkout()
from afhub.spawner.local import server_environment  # noqa: E402
from facility import Facility, HubSession, example_values, free_port, wait_for  # noqa: E402

ROOT = os.geteuid() == 0
ADMIN = "admin0"


def names(n: int) -> list[str]:
    return [f"u{i:03d}" for i in range(n)]


def afhub_values(n: int, limit: int) -> dict:
    values = example_values("local")
    values["hub"]["concurrent_spawn_limit"] = limit
    values["auth"]["dev"]["users"] = [{"name": ADMIN, "groups": ["afhub-admins"]}] + [
        {"name": u, "groups": ["physicists"]} for u in names(n)
    ]
    values["culling"] = {"enabled": False}
    # as a plain user one account for all: the plain hub below does the same
    values["backend"]["local"] = local_accounts()
    return values


PLAIN_CONFIG = textwrap.dedent(
    """\
    # a plain JupyterHub: GenericOAuthenticator + LocalProcessSpawner, nothing of afhub
    import os, pwd
    from jupyterhub.spawner import LocalProcessSpawner

    c = get_config()  # noqa: F821
    c.JupyterHub.ip = c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.port = {port}
    c.JupyterHub.hub_port = {hub_port}
    c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
    c.ConfigurableHTTPProxy.command = [{proxy!r}]
    c.JupyterHub.db_url = "sqlite:///{work}/jupyterhub.sqlite"
    c.JupyterHub.cookie_secret_file = "{work}/cookie_secret"
    c.JupyterHub.pid_file = "{work}/jupyterhub.pid"
    c.JupyterHub.concurrent_spawn_limit = {limit}
    c.JupyterHub.authenticator_class = "generic-oauth"
    c.GenericOAuthenticator.client_id = "plain-jupyterhub"
    c.GenericOAuthenticator.client_secret = "plain"
    c.GenericOAuthenticator.oauth_callback_url = "http://127.0.0.1:{port}/hub/oauth_callback"
    c.GenericOAuthenticator.authorize_url = "{idp}/oauth2/authorize"
    c.GenericOAuthenticator.token_url = "{idp}/oauth2/token"
    c.GenericOAuthenticator.userdata_url = "{idp}/userinfo"
    c.GenericOAuthenticator.username_claim = "sub"
    c.GenericOAuthenticator.scope = ["openid", "profile"]
    c.GenericOAuthenticator.basic_auth = True
    c.GenericOAuthenticator.allow_all = True
    c.GenericOAuthenticator.admin_users = {{{admin!r}}}
    c.Spawner.cmd = [{singleuser!r}]
    c.Spawner.args = ["--ServerApp.jpserver_extensions=afhub.server_ext=False"]
    c.Spawner.default_url = "/lab"
    c.Spawner.start_timeout = 300
    c.Spawner.http_timeout = 300

    ACCOUNTS = {accounts!r}  # hub user -> system account (None: the hub's own account)

    class PlainSpawner(LocalProcessSpawner):
        def _account(self):
            return ACCOUNTS or self.user.name

        def make_preexec_fn(self, name):
            if ACCOUNTS is None:
                home = self.user_env({{}})["HOME"]
                def preexec():
                    os.chdir(home)
                return preexec
            return super().make_preexec_fn(ACCOUNTS + name)

        def user_env(self, env):
            if ACCOUNTS is None:
                env["USER"] = self.user.name
                env["HOME"] = os.path.join({homes!r}, self.user.name)
                os.makedirs(env["HOME"], exist_ok=True)
                return env
            pw = pwd.getpwnam(ACCOUNTS + self.user.name)
            env.update(USER=pw.pw_name, HOME=pw.pw_dir, SHELL="/bin/sh")
            return env

        def get_args(self):
            args = super().get_args()
            if os.geteuid() == 0 and ACCOUNTS is None:
                args.append("--allow-root")
            return args

    c.JupyterHub.spawner_class = PlainSpawner
    """
)


class PlainHub:
    """A plain JupyterHub process (with its own configurable-http-proxy) on free ports."""

    def __init__(self, work: Path, idp: str, limit: int, singleuser: str, users: list[str]):
        self.work = work
        self.port, self.hub_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.hub_api = f"http://127.0.0.1:{self.hub_port}"  # what its servers call
        self.homes = shared_tempdir("afhub-bench-storm-homes-")
        self.prefix = f"afstorm{secrets.token_hex(2)}-" if ROOT else None
        self.made: list[str] = []
        if self.prefix:  # a plain hub needs existing accounts: made now, not timed
            for user in users + [ADMIN]:
                account = self.prefix + user
                subprocess.run(
                    ["useradd", "--create-home", "--home-dir", str(self.homes / user),
                     "--shell", "/usr/sbin/nologin", account],
                    check=True,
                )  # fmt: skip
                self.made.append(account)
        config = PLAIN_CONFIG.format(
            port=self.port,
            hub_port=self.hub_port,
            proxy_api_port=free_port(),
            proxy=shutil.which("configurable-http-proxy") or "configurable-http-proxy",
            work=work,
            limit=limit,
            idp=idp.rstrip("/"),
            admin=ADMIN,
            singleuser=singleuser,
            accounts=self.prefix,
            homes=str(self.homes),
        )
        (work / "jupyterhub_config.py").write_text(config)
        self._log = open(work / "jupyterhub.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(work / "jupyterhub_config.py")],
            cwd=work,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(lambda: answers(self.url + "hub/health"), 90, what="the plain hub")

    def hub_pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # stops its servers and proxy
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        for account in self.made:
            subprocess.run(["userdel", "--remove", account], capture_output=True)
        shutil.rmtree(self.homes, ignore_errors=True)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def login(hub, username: str) -> HubSession:
    """Through the provider's form, as ``Facility.login`` (any hub: ``hub.url``)."""
    s = requests.Session()
    r = s.get(hub.url + "hub/oauth_login", timeout=60)
    r.raise_for_status()
    r = s.post(r.url, data={"sub": username}, timeout=120)
    # lands on the hub: the spawn page (afhub's profiles), or a plain hub's start on login,
    # which may be over the spawn limit (429; the REST start below retries)
    landed = "/hub/" in r.url or "/user/" in r.url
    assert landed and r.status_code in (200, 429), (username, r.status_code, r.url)
    return HubSession(hub, username, s)


def storm_one(hub, username: str, limited: list) -> float:
    """Login -> JupyterLab ready for one user, in seconds."""
    t0 = time.perf_counter()
    hs = login(hub, username)
    while True:
        r = hs.spawn()
        if r.status_code != 429:
            break
        limited.append(username)
        time.sleep(1.0)
    assert r.status_code in (201, 202, 400), (username, r.status_code, r.text[:300])
    if r.status_code == 400:  # the login already started it (a hub that spawns on login)
        assert "already running" in r.text, r.text[:300]
    hs.wait_ready(timeout=300)
    while True:
        r = hs.get(f"user/{username}/lab", timeout=120)
        if r.status_code == 200 and "/user/" in r.url:
            break
        assert r.status_code in (200, 502, 503), (username, r.status_code, r.url)
        time.sleep(0.2)
    return time.perf_counter() - t0


class Sampler:
    """Peak RSS of the hub process and of each user's server (its process tree), sampled."""

    def __init__(self, hub_pid: int, users: set[str], api_port_hint: str):
        self.hub = psutil.Process(hub_pid)
        self.users = users
        self.hint = api_port_hint  # this hub's servers' JUPYTERHUB_API_URL starts with it
        self.hub_peak = 0
        self.server_peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.cpu0 = sum(self.hub.cpu_times()[:2])
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.cpu = sum(self.hub.cpu_times()[:2]) - self.cpu0

    def _run(self):
        servers: dict[int, str] = {}
        while not self._stop.is_set():
            try:
                self.hub_peak = max(self.hub_peak, self.hub.memory_info().rss)
            except psutil.Error:
                pass
            for p in psutil.process_iter():
                if p.pid in servers:
                    continue
                try:
                    env = p.environ()
                except psutil.Error:
                    continue
                user = env.get("JUPYTERHUB_USER")
                if user in self.users and env.get("JUPYTERHUB_API_URL", "").startswith(self.hint):
                    if not env.get("JUPYTERHUB_SERVICE_NAME"):
                        servers[p.pid] = user
            for pid, user in list(servers.items()):
                try:
                    p = psutil.Process(pid)
                    rss = p.memory_info().rss + sum(
                        c.memory_info().rss for c in p.children(recursive=True)
                    )
                except psutil.Error:
                    servers.pop(pid)
                    continue
                self.server_peak[user] = max(self.server_peak.get(user, 0), rss)
            self._stop.wait(0.5)


def hub_api_prefix(log_text: str) -> str:
    line = next(x for x in log_text.splitlines() if "internal ports: hub API " in x)
    return "http://" + line.split("internal ports: hub API ", 1)[1].split(",", 1)[0]


def storm(label: str, hub, users: list[str], hint: str) -> dict:
    limited: list[str] = []
    failures: list[str] = []
    times: list[float] = []
    with Sampler(hub.hub_pid(), set(users), hint) as sampler:
        with concurrent.futures.ThreadPoolExecutor(len(users)) as pool:
            futures = {pool.submit(storm_one, hub, u, limited): u for u in users}
            for f in concurrent.futures.as_completed(futures):
                try:
                    times.append(f.result())
                except Exception as e:  # a failure is a figure here, not a crash
                    failures.append(f"{futures[f]}: {type(e).__name__}: {str(e)[:200]}")
    q = statistics.quantiles(times, n=20, method="inclusive") if len(times) > 1 else times * 19
    out = {
        "ok": len(times),
        "failures": failures,
        "p50": statistics.median(times) if times else float("nan"),
        "p95": q[18] if times else float("nan"),
        "limited": len(limited),
        "cpu": sampler.cpu,
        "hub_rss": sampler.hub_peak / 2**20,
        "server_rss": statistics.median(sampler.server_peak.values()) / 2**20
        if sampler.server_peak
        else float("nan"),
    }
    print(
        f"{label:6s} {out['ok']}/{len(users)} ready, failures {len(failures)}, "
        f"login->JupyterLab ready p50 {out['p50']:.2f} s p95 {out['p95']:.2f} s, "
        f"429 answers {out['limited']}, hub CPU {out['cpu']:.1f} s "
        f"({out['cpu'] / len(users):.2f} s/user), hub peak RSS {out['hub_rss']:.0f} MiB, "
        f"server peak RSS {out['server_rss']:.0f} MiB (median per user)"
    )
    for line in failures:
        print(f"  failed: {line}")
    return out


def stop_all(hub, users: list[str]) -> None:
    admin = login(hub, ADMIN)
    for user in users:
        admin.api("DELETE", f"users/{user}/server")
    wait_for(
        lambda: all(not admin.api("GET", f"users/{u}").json().get("servers") for u in users),
        120,
        what="every server stopped",
    )


class HubStub:
    """What a bare ``jupyterhub-singleuser`` asks the hub while starting (its version check,
    activity): 200 and the hub's version to anything, on a free loopback port."""

    def __init__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from importlib.metadata import version

        body = json.dumps({"version": version("jupyterhub")}).encode()

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-JupyterHub-Version", version("jupyterhub"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.api_url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def floor(prefix: str, rounds: int) -> float:
    """Seconds from starting a bare ``jupyterhub-singleuser`` of ``prefix`` (no hub in front:
    :class:`HubStub`; afhub's extension off) to its API answering; the median of ``rounds``
    after one warm-up."""
    exe = os.path.join(prefix, "bin", "jupyterhub-singleuser")
    times = []
    stub = HubStub()
    try:
        for i in range(rounds + 1):
            times += floor_round(exe, stub.api_url, timed=i > 0)
    finally:
        stub.close()
    return statistics.median(times)


def floor_round(exe: str, api_url: str, *, timed: bool) -> list[float]:
    """One bare start: ``[seconds]`` to its API answering (``[]`` when not ``timed``)."""
    port = free_port()
    home = tempfile.mkdtemp(prefix="afhub-bench-floor-")
    env = {
        "PATH": f"{os.path.dirname(exe)}:/usr/bin:/bin",
        "HOME": home,
        "JUPYTERHUB_API_TOKEN": secrets.token_hex(16),
        "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-floor",
        "JUPYTERHUB_API_URL": api_url,
        "JUPYTERHUB_BASE_URL": "/",
        "JUPYTERHUB_USER": "floor",
        "JUPYTERHUB_SERVICE_PREFIX": "/user/floor/",
        "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/floor/",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": "/user/floor/oauth_callback",
    }
    args = [exe, "--ServerApp.jpserver_extensions=afhub.server_ext=False"]
    if ROOT:
        args.append("--allow-root")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        args, env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda port=port: answers(f"http://127.0.0.1:{port}/user/floor/api"),
            120,
            interval=0.05,
            what="a bare jupyterhub-singleuser",
        )
        took = time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)
    return [took] if timed else []  # an untimed round warms the page cache


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--spawn-limit", type=int, default=10)
    ap.add_argument("--floor-rounds", type=int, default=3)
    smoke_arg(ap)
    args = ap.parse_args()
    if args.smoke:
        args.users, args.spawn_limit, args.floor_rounds = 2, 1, 1
    users = names(args.users)
    prefix = server_environment()
    singleuser = os.path.join(prefix, "bin", "jupyterhub-singleuser")
    if not os.access(singleuser, os.X_OK):
        raise SystemExit(f"no {singleuser}: build the server environment first (make server-env)")
    print(
        f"{args.users} users at once, concurrent_spawn_limit {args.spawn_limit}, "
        f"environment {prefix}, {'per-user accounts (root)' if ROOT else 'one account'}"
    )
    work = Path(tempfile.mkdtemp(prefix="afhub-bench-storm-"))  # the hubs' state: private
    fac = Facility(afhub_values(args.users, args.spawn_limit), work / "afhub")
    plain = None
    results = {}
    try:
        bare = floor(prefix, args.floor_rounds)
        print(f"floor: a bare jupyterhub-singleuser answers in {bare:.2f} s (median)")
        fac.start(timeout=120)
        results["afhub"] = storm("afhub", fac, users, hub_api_prefix(fac.log_text()))
        stop_all(fac, users)
        (work / "plain").mkdir()
        plain = PlainHub(work / "plain", fac.idp_url, args.spawn_limit, singleuser, users)
        results["plain"] = storm("plain", plain, users, plain.hub_api)
        stop_all(plain, users)
    finally:
        if plain is not None:
            plain.stop()
        fac.stop()
        shutil.rmtree(work, ignore_errors=True)
    a, p = results["afhub"], results["plain"]
    print(
        f"ratio afhub/plain: p50 {a['p50'] / p['p50']:.2f}x (goal <= 1.05x)  "
        f"p95 {a['p95'] / p['p95']:.2f}x  hub CPU {a['cpu'] / p['cpu']:.2f}x"
    )
    print(
        f"p50 as a multiple of the floor: afhub {a['p50'] / bare:.1f}x  plain {p['p50'] / bare:.1f}x"
    )
    failed = len(a["failures"]) + len(p["failures"])
    print(f"failures {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
