"""Slurm spawns through afhub against plain batchspawner, on one real Slurm, in one run.

1. Spawn-to-ready: a real JupyterHub per variant on this machine's test Slurm
   (``tests/slurm.py``: munged + slurmctld + slurmd), each started from a generated
   ``jupyterhub_config.py``: afhub's (``afhub.hub_config.configure`` with a slurm values file)
   and plain batchspawner's ``SlurmSpawner`` with the same requests (partition, 1 CPU, 1 GiB,
   the same server environment, batchspawner's default poll settings on both). Both use
   JupyterHub's DummyAuthenticator and an admin API token, so only the spawner differs. Timed:
   ``POST /hub/api/users/<u>/server`` until the user model says ``ready``, then the server is
   stopped and the queue drained. Rounds alternate which variant goes first.
2. Spawn page: ``GET /hub/spawn`` over HTTP (the whole page JupyterHub serves, logged in, no
   server running) on two fresh afhub hubs started for this part alone (same history: none),
   one with capacity shown (its background reader holding ``sinfo`` figures, refreshed every
   5 s) and one with ``capacity.enabled: false``; requests alternate between the two one by
   one. The spawn hubs are stopped first. And the options form alone
   (``SlurmProfileSpawner.afhub_render_form()`` in this process, 20 profiles, cache filled
   from the real ``sinfo``) with and without the capacity lines.

Prints the median of each and the ratios (goals: spawn <= 1.10x, page <= 1.05x). Needs root,
Debian's slurm-wlm/munge/sudo and the server environment (``make server-env``).

Measured 2026-11-22 (a ``pip install .`` venv, 2 shared cores under load ~3.3, three runs,
median): spawn-to-ready 0.81x (runs 0.81, 0.82, 0.65), spawn page 1.02x (1.02, 1.02, 1.01),
form fragment 1.07x. Details and what changed: docs/batch.md "Start time and page speed".

    python bench/slurm_spawn.py [--rounds 5] [--pages 200] [--renders 200] [--smoke]

``--smoke`` (``tests/test_bench_smoke.py``): one round, 4 pages, 4 renders, the same path.
Without root or Slurm it exits 0 after saying why it cannot run (there is nothing to measure).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pwd
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import slurm  # noqa: E402
from slurm import SlurmCluster, slurm_available  # noqa: E402

USER = "batchbench"


def server_env() -> str:
    return slurm.server_env() or sys.exit(
        "no server environment with batchspawner-singleuser (make server-env)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COMMON = """
c.JupyterHub.ip = c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.db_url = "sqlite:///{workdir}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{workdir}/cookie_secret"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "bench", "scopes": ["admin:users", "admin:servers"], "services": ["bench"]}}]
c.Authenticator.allowed_users = {{{user!r}}}
c.Spawner.start_timeout = 300
c.Spawner.http_timeout = 120
c.Spawner.default_url = "/lab"
"""

AFHUB = (
    """
from afhub.hub_config import configure
configure(c, {values!r}, data_dir={workdir!r})
"""
    + COMMON
)

PLAIN = (
    COMMON
    + """
from batchspawner import SlurmSpawner
from traitlets import Unicode

class LoopbackSlurmSpawner(SlurmSpawner):
    ip = Unicode("127.0.0.1")  # start() resets ip to the class default

    def state_gethost(self):
        return "127.0.0.1"

c.JupyterHub.spawner_class = LoopbackSlurmSpawner
c.SlurmSpawner.batchspawner_singleuser_cmd = "{env}/bin/batchspawner-singleuser"
c.SlurmSpawner.cmd = ["{env}/bin/jupyterhub-singleuser"]
c.SlurmSpawner.req_partition = "cpu"
c.SlurmSpawner.req_nprocs = "1"
c.SlurmSpawner.req_memory = "1024M"
c.SlurmSpawner.req_runtime = "01:00:00"
c.SlurmSpawner.environment = {{"SLURM_CONF": {slurm_conf!r}}}  # sbatch runs with get_env()
"""
)


def afhub_values(cluster: SlurmCluster, env: str, capacity: bool = True) -> dict:
    return {
        "auth": {"provider": "dev", "dev": {"users": [{"name": USER}]}},
        "backend": {
            "type": "slurm",
            "slurm": {
                "runtime": "01:00:00",
                "environment": env,
                "server_ip": "127.0.0.1",
                "node_addresses": {cluster.host: "127.0.0.1"},
                "capacity": {"refresh_interval": 5, "enabled": capacity},
            },
        },
        "profiles": [
            {
                "display_name": "CPU",
                "slug": "cpu",
                "resources": {"cpu": 1, "memory": "1Gi"},
                "batch": {"partition": "cpu"},
            }
        ],
        "culling": {"enabled": False},
    }


class Hub:
    def __init__(
        self, name: str, template: str, cluster: SlurmCluster, env: str, root: Path, capacity=True
    ):
        self.workdir = root / name
        self.workdir.mkdir()
        self.port, self.token = free_port(), secrets.token_hex(16)
        values = self.workdir / "values.yaml"
        values.write_text(yaml.safe_dump(afhub_values(cluster, env, capacity)))
        proxy = str(REPO / "node_modules" / ".bin" / "configurable-http-proxy")
        config = template.format(
            port=self.port, hub_port=free_port(), proxy_port=free_port(), proxy=proxy,
            workdir=str(self.workdir), token=self.token, user=USER, values=str(values), env=env,
            slurm_conf=cluster.env["SLURM_CONF"],
        )  # fmt: skip
        (self.workdir / "jupyterhub_config.py").write_text(textwrap.dedent(config))
        self.log = open(self.workdir / "hub.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", "jupyterhub_config.py"],
            cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **cluster.env},
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}/hub/api/"
        self._wait(lambda: requests.get(self.url, timeout=5).status_code == 200, 120, "hub up")
        self.api("POST", f"users/{USER}")

    def api(self, method: str, path: str, **kw):
        return requests.request(
            method,
            self.url + path,
            headers={"Authorization": f"token {self.token}"},
            timeout=60,
            **kw,
        )

    def _wait(self, predicate, timeout, what):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited; see {self.workdir / 'hub.log'}")
            time.sleep(0.1)
        raise TimeoutError(f"{what} not reached in {timeout}s; see {self.workdir / 'hub.log'}")

    def spawn_to_ready(self, cluster: SlurmCluster) -> float:
        t0 = time.perf_counter()
        r = self.api("POST", f"users/{USER}/server", json={})
        assert r.status_code in (201, 202), r.text
        self._wait(
            lambda: self.api("GET", f"users/{USER}").json()["servers"].get("", {}).get("ready"),
            300,
            "server ready",
        )
        elapsed = time.perf_counter() - t0
        self.api("DELETE", f"users/{USER}/server")
        self._wait(
            lambda: "" not in self.api("GET", f"users/{USER}").json()["servers"],
            120,
            "server stopped",
        )
        deadline = time.monotonic() + 60
        while cluster.queue() and time.monotonic() < deadline:
            time.sleep(0.2)
        return elapsed

    def login(self) -> requests.Session:
        s = requests.Session()
        base = self.url.removesuffix("api/")
        s.get(base + "login", timeout=30)
        xsrf = s.cookies.get("_xsrf")
        r = s.post(
            base + "login", data={"username": USER, "password": "x", "_xsrf": xsrf}, timeout=30
        )
        r.raise_for_status()
        return s

    def page_time(self, session: requests.Session) -> float:
        """GET /hub/spawn as the logged-in user (no server running): the whole spawn page."""
        t0 = time.perf_counter()
        r = session.get(self.url.removesuffix("api/") + "spawn", timeout=30)
        elapsed = time.perf_counter() - t0
        assert r.status_code == 200 and "afhub-profile" in r.text
        self.page_text = r.text
        return elapsed

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def page_render(renders: int) -> tuple[float, float]:
    from afhub.spawner.batch import SlurmProfileSpawner
    from traitlets.config import Config

    c = Config()
    c.ProfileSpawnerMixin.profiles = [
        {
            "display_name": f"CPU {i}",
            "slug": f"cpu{i}",
            "resources": {"cpu": 1 + i % 4, "memory": "1Gi"},
            "batch": {"partition": "cpu"},
        }
        for i in range(10)
    ] + [
        {
            "display_name": f"GPU {i}",
            "slug": f"gpu{i}",
            "resources": {"cpu": 1, "memory": "1Gi", "gpu": {"count": 1, "type": "a100"}},
            "batch": {"partition": "gpu"},
        }
        for i in range(10)
    ]

    class User:
        name, groups = USER, []

    with_cap = SlurmProfileSpawner(config=c, user=User())
    without = SlurmProfileSpawner(config=c, user=User())
    without.capacity_enabled = False
    cache = with_cap.afhub_capacity_cache()
    await cache.refresh()  # the background task keeps it fresh on a hub
    assert "CPUs idle" in with_cap.afhub_render_form()
    times = {True: [], False: []}
    for _ in range(renders):
        for shown, sp in ((True, with_cap), (False, without)):
            t0 = time.perf_counter()
            sp.afhub_render_form()
            times[shown].append(time.perf_counter() - t0)
    cache.stop()
    return statistics.median(times[True]), statistics.median(times[False])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--renders", type=int, default=200)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--smoke", action="store_true", help="1 round; figures mean nothing")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.pages, args.renders = 1, 4, 4
    reason = slurm_available()
    if reason:
        print(f"not run: {reason}")
        sys.exit(0)
    env = server_env()
    try:
        pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", USER], check=True)
    root = Path(tempfile.mkdtemp(prefix="afhub-bench-slurm-"))
    with SlurmCluster(cpus=4, memory_mb=4000, gpus=1) as cluster:
        os.environ.update(cluster.env)
        hubs = {}
        try:
            hubs["afhub"] = Hub("afhub", AFHUB, cluster, env, root)
            hubs["plain"] = Hub("plain", PLAIN, cluster, env, root)
            times = {"afhub": [], "plain": []}
            for r in range(args.rounds):
                order = ("plain", "afhub") if r % 2 == 0 else ("afhub", "plain")
                for name in order:
                    times[name].append(hubs[name].spawn_to_ready(cluster))
            a, p = statistics.median(times["afhub"]), statistics.median(times["plain"])
            print(f"spawn-to-ready  afhub {a:.2f} s  plain SlurmSpawner {p:.2f} s  "
                  f"ratio {a / p:.2f}x (goal <= 1.10x; median of {args.rounds})")  # fmt: skip
            print("  afhub  runs:", " ".join(f"{t:.2f}" for t in times["afhub"]))
            print("  plain  runs:", " ".join(f"{t:.2f}" for t in times["plain"]))
            # the page: two fresh hubs with the same history, the spawn hubs stopped
            for name in ("afhub", "plain"):
                hubs.pop(name).stop()
            hubs["cap"] = Hub("cap", AFHUB, cluster, env, root)
            hubs["nocap"] = Hub("nocap", AFHUB, cluster, env, root, capacity=False)
            sessions = {name: hubs[name].login() for name in ("cap", "nocap")}
            deadline = time.monotonic() + 60  # until the background reader has read sinfo
            while True:
                hubs["cap"].page_time(sessions["cap"])
                if "CPUs idle" in hubs["cap"].page_text:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("no capacity on the spawn page after 60 s")
                time.sleep(0.5)
            for name in ("cap", "nocap"):  # warm both (first renders compile templates)
                for _ in range(5):
                    hubs[name].page_time(sessions[name])
            pages = {"cap": [], "nocap": []}
            for i in range(args.pages):
                for name in ("cap", "nocap") if i % 2 == 0 else ("nocap", "cap"):
                    pages[name].append(hubs[name].page_time(sessions[name]))
            assert "CPUs idle" in hubs["cap"].page_text
            assert "CPUs idle" not in hubs["nocap"].page_text
            pw, pwo = statistics.median(pages["cap"]), statistics.median(pages["nocap"])
            print(f"spawn page GET  with capacity {pw * 1e3:.2f} ms  without {pwo * 1e3:.2f} ms  "
                  f"ratio {pw / pwo:.2f}x (goal <= 1.05x; median of {args.pages}, whole page over HTTP)")  # fmt: skip
            w, wo = asyncio.run(page_render(args.renders))
            print(f"options form    with capacity {w * 1e3:.2f} ms  without {wo * 1e3:.2f} ms  "
                  f"ratio {w / wo:.2f}x (the form fragment alone, in process; median of {args.renders})")  # fmt: skip
        finally:
            for h in hubs.values():
                h.stop()
    subprocess.run(["userdel", "--remove", USER], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)  # kept (with the hub logs) only when a step failed


if __name__ == "__main__":
    main()
